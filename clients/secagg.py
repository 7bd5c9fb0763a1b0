"""Node side of ``dp-trust = secagg``: per-round key pairs, pairwise keys, the masked noisy share.

Key agreement uses Flower's secure-aggregation primitives (ECDH on P-384 keys from
``generate_key_pairs``, HKDF in ``generate_shared_key``); noise shares, quantisation and mask
arithmetic are in :mod:`fedrec.privacy.secagg`. A fresh key pair per round: the private key stays
in the node's ``Context.state`` until its train message of that round arrives.
"""

from __future__ import annotations

import base64

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)

from fedrec.config import Config
from fedrec.privacy import secagg
from fedrec.privacy.mechanism import DP_SECAGG, gaussian_noise, secret_rng

SECRET_KEY = "fedrec.secagg-secret"


def new_public_key(context: Context, round_: int) -> bytes:
    """A fresh key pair for ``round_``; the private half is kept in the node's state."""
    sk, pk = generate_key_pairs()
    context.state[SECRET_KEY] = ConfigRecord({"round": round_, "sk": private_key_to_bytes(sk)})
    return public_key_to_bytes(pk)


def masked_share(cfg: Config, msg: Message, context: Context, round_: int,
                 clipped_sum: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This node's clipped sum plus its noise share, quantised and masked (int64 bit patterns
    of values modulo ``2^62``)."""
    conf = msg.content["config"]
    peers = [int(p) for p in conf[secagg.PEERS_KEY]]
    keys = list(conf[secagg.PUBLIC_KEYS_KEY])
    me = int(context.node_id)
    held = context.state.get(SECRET_KEY)
    if held is None or int(held["round"]) != round_:
        raise RuntimeError(f"secure aggregation, round {round_}: node {me} holds no key pair for "
                           "this round (node restarted after the key exchange?)")
    if me not in peers:
        raise RuntimeError(f"secure aggregation, round {round_}: node {me} is not in the key "
                           "exchange of this round")
    sk = bytes_to_private_key(held["sk"])
    shared = {p: base64.urlsafe_b64decode(generate_shared_key(sk, bytes_to_public_key(k)))
              for p, k in zip(peers, keys, strict=True) if p != me}
    n = len(peers)
    z, clip = cfg.privacy.noise_multiplier, cfg.privacy.clip_norm
    gen = secret_rng(cfg.privacy.dp_seed, DP_SECAGG, round_, me)
    noise = gaussian_noise({k: v.shape for k, v in clipped_sum.items()}, z * clip / n ** 0.5, gen)
    noisy = {k: np.asarray(v, dtype=np.float64) + noise[k] for k, v in clipped_sum.items()}
    q = secagg.quantize(noisy, float(conf[secagg.BOUND_KEY]), n)
    masked = secagg.add_masks(q, me, shared, round_)
    return {k: np.asarray(v).view(np.int64) for k, v in masked.items()}
