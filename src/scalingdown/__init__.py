"""ScalingDown: how small can a student model be and still beat a larger one?"""

__version__ = "0.1.0"
