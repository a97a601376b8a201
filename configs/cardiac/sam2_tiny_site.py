# The SAM2 tracker trained on the cross-site split (Site_G_100 + Site_R_126), evaluated on whole videos of the
# validation sites and of the held-out half of the test site (the videos the site-adaptation runs are tested on).
_base_ = ["./sam2_tiny.py"]
_video = {k: v for k, v in dict(per_video=True, evaluator=[dict(name="VideoSegEvaluator", num_vis=3),
                                                             dict(name="TrackingEvaluator")],
                                mapper=dict(name="VideoEvalMapper", size=[128, 128],
                                            transforms=[dict(name="FanCrop")])).items()}
data = dict(train=["echo_synth_site_train"],
            evaluate=[dict(name="echo_synth_site_val", tag="echo_synth_site_val_video", **_video),
                      dict(name="echo_synth_site_adapt1_test", tag="echo_synth_site_heldout_video", **_video)])
