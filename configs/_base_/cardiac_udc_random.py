# Data: real CardiacUDC under $DATASET_PATH/cardiacUDC_dataset, seeded random 80/20 video split.
_base_ = ["./echo_synth_random.py"]
data = dict(train=["cardiac_udc_random_train"], evaluate=["cardiac_udc_random_test"])
