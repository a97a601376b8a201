# AR-SEG's first design: mask positions carry only their token and position, no cell feature, so every cell is
# found through attention to the 8×8 prefix. Greedy decoding drifts from the image (README), the reason for
# cell_features=True in arseg_tiny.py.
_base_ = ["arseg_tiny.py"]
model = dict(cell_features=False)
