"""cluster-sim: conductance-based spiking networks on clusters."""
__version__ = "0.1.0"
