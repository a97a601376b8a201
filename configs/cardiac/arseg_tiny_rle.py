# AR-SEG with Text4Seg's row-wise run-length tokens over the same 16×16 grid (about 91 tokens per mask on EchoSynth
# instead of 258): variable-length constrained decoding, the refiner trained on the GT grid with 10 % of its cells
# relabelled (the teacher-forced argmax of a run-length sequence is not a grid).
_base_ = ["arseg_tiny.py"]
model = dict(tokenizer=dict(name="rle", grid=16, resample="nearest"), cell_features=False)  # no position per cell
