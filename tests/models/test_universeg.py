"""UniverSeg (seed 004): the published network's parameter count, support-order invariance (the CrossBlock
averages over support items), that the support changes the answer, the per-class support, and the bad inputs."""
from __future__ import annotations

import pytest
import torch

import models  # noqa: F401
from core.errors import ConfigError
from core.registry import MODELS, build
from models.metaarchs.universeg import CrossConv, UniverSegNet


def test_published_network_has_the_published_parameter_count():
    assert sum(p.numel() for p in UniverSegNet().parameters()) == 1_182_785
    assert isinstance(CrossConv(1, 2, 4).conv, torch.nn.Conv2d)  # a plain Conv2d inside (peft can wrap it)


def test_support_order_does_not_matter_and_support_does():
    torch.manual_seed(0)
    net = UniverSegNet((8, 8, 8), (8, 8)).eval()
    g = torch.Generator().manual_seed(1)
    x, si = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 5, 1, 16, 16, generator=g)
    sl = (torch.rand(2, 5, 1, 16, 16, generator=g) > 0.5).float()
    out = net(x, si, sl)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert out.shape == (2, 1, 16, 16)
    assert torch.allclose(net(x, si[:, perm], sl[:, perm]), out, atol=1e-5)
    assert not torch.allclose(net(x, si, 1 - sl), out, atol=1e-4)


def _batch(k=2, s=2):
    g = torch.Generator().manual_seed(2)
    masks = torch.zeros(1, 2 * s, k, 16, 16, dtype=torch.bool)
    masks[..., 4:10, 4:10] = True
    return dict(video=torch.rand(1, 3, 3, 16, 16, generator=g), masks=torch.rand(1, 3, k, 16, 16, generator=g) > 0.5,
                has_ann=torch.ones(1, 3, dtype=torch.bool),
                support=dict(images=torch.rand(1, 2 * s, 3, 16, 16, generator=g), masks=masks,
                             classes=torch.tensor([[0] * s + [1] * s])))


def test_model_loss_predict_and_bad_support():
    torch.manual_seed(0)
    m = build(MODELS, dict(name="UniverSeg", num_classes=2, encoder=[8, 8, 8], decoder=[8, 8]))
    batch = _batch()
    losses = m(batch)
    assert set(losses) == {"loss_bce", "loss_dice"} and all(torch.isfinite(v) for v in losses.values())
    probs = m.eval().predict(batch)["probs"]
    assert probs.shape == (1, 3, 2, 16, 16) and 0 <= probs.min() and probs.max() <= 1
    other = _batch()
    other["support"]["images"][0, :2] = 0.3  # class 0's support changed, class 1's kept
    again = m.predict(other)["probs"]
    assert torch.equal(again[:, :, 1], probs[:, :, 1]) and not torch.equal(again[:, :, 0], probs[:, :, 0])
    empty = _batch()
    empty["support"]["masks"][0, 3] = False
    with pytest.raises(ConfigError, match=r"support item\(s\) \[3\] of sample 0 have an empty mask for class 1"):
        m.predict(empty)
    with pytest.raises(ConfigError, match="must be divisible by 4"):
        m.predict({**batch, "video": batch["video"][..., :14, :14],
                   "support": {**batch["support"], "images": batch["support"]["images"][..., :14, :14]}})
    with pytest.raises(ConfigError, match="support images are"):
        m.predict({**batch, "video": torch.rand(1, 3, 3, 8, 8)})


def test_support_size_zero_and_other_channel_count_are_refused():
    m = build(MODELS, dict(name="UniverSeg", num_classes=2, encoder=[8, 8, 8], decoder=[8, 8])).eval()
    none_for_1 = _batch()
    none_for_1["support"]["classes"][:] = 0
    assert m.predict(none_for_1)["probs"][:, :, 1].eq(0).all()  # a class without support: predicted absent
    empty = _batch()
    empty["support"] = {k: v[:, :0] for k, v in empty["support"].items()}
    for call in (m.predict, m.train()):
        with pytest.raises(ConfigError, match=r"the support set is empty \(support size 0\)"):
            call(empty)
    m.eval()
    grey = _batch()
    grey["support"]["images"] = grey["support"]["images"][:, :, :1]
    with pytest.raises(ConfigError, match="support images have 1 channels, the target 3"):
        m.predict(grey)


def test_lora_on_the_convolutions_and_width_checks(tmp_path):
    from core.errors import CheckpointError
    from models.sam2.lora import load_lora_state_dict, lora_state_dict

    torch.manual_seed(0)
    base = build(MODELS, dict(name="UniverSeg", num_classes=2, encoder=[8, 8, 8], decoder=[8, 8]))
    path = tmp_path / "base.pth"
    torch.save({"model": base.state_dict(), "model_name": "UniverSeg"}, path)
    batch = _batch()
    ref = base.eval().predict(batch)["probs"]
    with pytest.raises(ConfigError, match="train_mode='lora' adapts a trained UniverSeg: set model.checkpoint"):
        build(MODELS, dict(name="UniverSeg", num_classes=2, encoder=[8, 8, 8], decoder=[8, 8], train_mode="lora"))
    lora = build(MODELS, dict(name="UniverSeg", num_classes=2, encoder=[8, 8, 8], decoder=[8, 8], train_mode="lora",
                              checkpoint=str(path), lora=dict(r=2)))
    trainable = [n for n, _ in lora.trainable_parameters()]
    convs = [n for n, mod in base.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    assert trainable and all("lora_" in n for n in trainable) and len(trainable) == 2 * len(convs)
    assert torch.equal(lora.eval().predict(batch)["probs"], ref)  # LoRA B starts at zero: the start model exactly
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    changed = lora.predict(batch)["probs"]
    assert not torch.allclose(changed, ref)
    other = build(MODELS, dict(name="UniverSeg", num_classes=2, encoder=[8, 8, 8], decoder=[8, 8], train_mode="lora",
                               checkpoint=str(path), lora=dict(r=2)))
    load_lora_state_dict(other, lora_state_dict(lora))
    assert torch.equal(other.eval().predict(batch)["probs"], changed)
    cross = build(MODELS, dict(name="UniverSeg", num_classes=2, encoder=[8, 8, 8], decoder=[8, 8], train_mode="lora",
                               checkpoint=str(path), lora=dict(target="cross", r=2)))
    assert {n.split(".lora_")[0] for n, _ in cross.trainable_parameters()} == {
        f"net.{p}.{i}.cross.conv" for p, n in (("enc", 3), ("dec", 2)) for i in range(n)}
    with pytest.raises(CheckpointError, match=r"encoder widths \[8, 8, 8\] / decoder \[8, 8\], but the config builds "
                                              r"encoder \[16, 16, 16\] / decoder \[16, 16\]"):
        build(MODELS, dict(name="UniverSeg", num_classes=2, encoder=[16, 16, 16], decoder=[16, 16],
                           checkpoint=str(path)))
    with pytest.raises(ConfigError, match="matches no Conv2d layer of UniverSeg; closest"):
        build(MODELS, dict(name="UniverSeg", num_classes=2, encoder=[8, 8, 8], decoder=[8, 8], train_mode="lora",
                           checkpoint=str(path), lora=dict(target=["nonexistent"])))
