"""Item towers: encoders of an item's public side information, fused with its ID embedding.

One file per tower, registered by name (``register_tower("kg")``); :mod:`fedrec.towers.fusion`
wraps any base model with any set of towers (``towers = "kg,text,genre"``).
"""
