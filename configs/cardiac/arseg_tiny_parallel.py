# The AR-SEG control: the same network and parameters, all 256 grid tokens predicted in one pass from the prefix
# (no causal order), so the difference to arseg_tiny.py is next-token prediction alone.
_base_ = ["arseg_tiny.py"]
model = dict(order="parallel")
