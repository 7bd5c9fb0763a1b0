"""fedrec's Flower ServerApp, strategy registry and round loop."""
