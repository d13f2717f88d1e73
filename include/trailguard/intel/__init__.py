"""The intel wing: what TrailGuard knows about networks, offline by default.

Owns the origin of an address (hosting, VPN, Tor, CDN, bot: the dated ranges the ``iporigin`` package
ships) and AWS's published IP ranges (the same shipped snapshot, or an ``ip-ranges.json`` the user
refreshes it from: ``networks``), and the user's threat lists (plain IP/CIDR, CSV, STIX 2.1, Tor exit
lists, from files or ``s3://``: ``reputation``).
May import: ``trailguard.store``. The detection and model wings build on it.
"""
