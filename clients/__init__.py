"""fedrec's Flower ClientApp: thin handlers around ``fedrec.node``."""
