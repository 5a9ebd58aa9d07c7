"""DrIGM: distributionally robust cooperative multi-agent RL with value factorisation (neural implementation)."""

__version__ = "0.1.0"
