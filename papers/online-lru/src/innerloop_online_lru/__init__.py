"""Online learning of long-range dependencies (Zucchet et al., NeurIPS 2023)."""
