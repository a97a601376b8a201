"""Prediction heads shared by meta-architectures (the BOX-SAM2 box head)."""
