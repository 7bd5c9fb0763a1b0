"""Simulated attackers (issue 13): fake users that promote a target item.

Threat model. The attacker registers **extra, fake users** (it does not take over real ones):
``attack-fraction`` x the real user count of them, appended after the real users
(``SplitData.fake_users``) and dealt round-robin over the nodes, so every cohort holds real and
fake users. Real users keep their ids, data and every random draw, so a clean and an attacked
run differ only by the attack; fake users have no test item and are never evaluated. The
attack is seeded from the run seed (``fedrec.rng``): it is an experiment condition, not privacy
randomness.

- ``fake-random`` / ``fake-popular`` (data poisoning, :mod:`fedrec.attacks.profiles`; the random
  and bandwagon shilling attacks): each fake user holds the target item plus filler items
  (uniformly random / among the most popular ones), as many as a real user's profile
  (``attack-profile-size``: drawn from the real sizes, the largest real one, or fixed), and
  trains honestly on that profile.
- ``boost`` (model poisoning, :mod:`fedrec.attacks.boost`; FedRecAttack / PipAttack style):
  each sampled fake user replaces its update by a crafted one that moves only the target item's
  rows: bias up, embedding towards the mean of the popular items' embeddings (which most users
  score highly), with the largest norm every bound in force lets through.

The target item is ``attack-target`` or, at -1, a seeded pick among the unpopular items.
"""
