# Data: EchoNet-Dynamic under $DATASET_PATH/EchoNet-Dynamic (or data.roots.echonet_dynamic), FileList's official
# TRAIN / VAL / TEST split; one class (LV), a sample per traced frame (ES and ED), the clip protocol of the base.
_base_ = ["./echo_synth_random.py"]
data = dict(
    train=["echonet_dynamic_train"],
    evaluate=["echonet_dynamic_val", "echonet_dynamic_test"],
    roots=dict(echonet_dynamic=None),  # None: $DATASET_PATH
    # EchoNet-Dynamic frames are used whole (no fan crop, unlike the CardiacUDC base)
    train_mapper=dict(transforms=[]), eval_mapper=dict(transforms=[]),
)
