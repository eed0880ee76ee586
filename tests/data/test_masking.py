"""Tests of BERT's masked-LM corruption: rates, special tokens, labels, seeding and config checks."""

import pytest
import torch

from lmtemplate.config import ConfigError
from lmtemplate.data.masking import IGNORE, MaskingConfig, mask_tokens

VOCAB = 1000
PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = torch.tensor([PAD, CLS, SEP, MASK])


def batch(seed=0, shape=(64, 512)):
    """Random ids >= 4 with [CLS] first, [SEP] in the middle and at the end, and a [PAD] tail per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, shape, generator=g)
    ids[:, 0] = CLS
    ids[:, shape[1] // 2] = SEP
    ids[:, -1] = SEP
    lengths = torch.randint(shape[1] // 2, shape[1], (shape[0],), generator=g)
    ids[torch.arange(shape[1])[None, :] >= lengths[:, None]] = PAD
    return ids


def corrupt(ids, cfg, seed=0):
    return mask_tokens(ids, cfg, MASK, SPECIAL, VOCAB, generator=torch.Generator().manual_seed(seed))


def shares(ids, inputs, labels):
    """(selected share of non-special tokens, and of the selected: masked, random, kept shares)."""
    special = torch.isin(ids, SPECIAL)
    selected = labels != IGNORE
    n = selected.sum().item()
    masked = (selected & (inputs == MASK)).sum().item() / n
    kept = (selected & (inputs == ids)).sum().item() / n
    randomised = (selected & (inputs != MASK) & (inputs != ids)).sum().item() / n
    return n / (~special).sum().item(), masked, randomised, kept


def test_default_rates_specials_and_labels():
    """~15% of the ordinary tokens are selected, 80/10/10 masked/random/kept; specials never touched."""
    ids = batch()
    special = torch.isin(ids, SPECIAL)
    assert 0.1 < special.float().mean() < 0.5  # the batch really has many special tokens
    inputs, labels = corrupt(ids, MaskingConfig())
    assert inputs.shape == labels.shape == ids.shape
    rate, masked, randomised, kept = shares(ids, inputs, labels)
    assert abs(rate - 0.15) < 0.01
    assert abs(masked - 0.8) < 0.02
    assert abs(randomised - 0.1) < 0.02
    assert abs(kept - 0.1) < 0.02
    selected = labels != IGNORE
    assert not (selected & special).any()  # specials never selected ...
    assert torch.equal(inputs[special], ids[special])  # ... nor replaced
    assert torch.equal(labels[selected], ids[selected])  # labels: the original ids where selected
    assert (labels[~selected] == IGNORE).all()
    assert torch.equal(inputs[~selected], ids[~selected])  # only selected tokens change
    assert inputs.min() >= 0 and inputs.max() < VOCAB


def test_same_generator_seed_same_masks():
    """A seeded generator makes the corruption reproducible; another seed gives another one."""
    ids = batch(shape=(8, 64))
    a, b, c = corrupt(ids, MaskingConfig(), 5), corrupt(ids, MaskingConfig(), 5), corrupt(ids, MaskingConfig(), 6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("rate, mask, random", [(0.5, 0.0, 1.0), (0.3, 1.0, 0.0), (0.05, 0.0, 0.0), (0.4, 0.5, 0.3)])
def test_custom_rates_are_honoured(rate, mask, random):
    """The selection rate and the mask / random / keep split follow the MaskingConfig."""
    ids = batch(seed=1)
    inputs, labels = corrupt(ids, MaskingConfig(rate=rate, mask=mask, random=random), seed=2)
    selected_share, masked, randomised, kept = shares(ids, inputs, labels)
    assert abs(selected_share - rate) < 0.01
    assert abs(masked - mask) < 0.02
    assert abs(randomised - random) < 0.02
    assert abs(kept - (1 - mask - random)) < 0.02
    assert not (torch.isin(ids, SPECIAL) & (labels != IGNORE)).any()


@pytest.mark.parametrize("kwargs, field", [
    (dict(rate=0.0), r"masking\.rate"),
    (dict(rate=1.0), r"masking\.rate"),
    (dict(rate=-0.1), r"masking\.rate"),
    (dict(mask=0.8, random=0.3), r"masking\.mask"),
    (dict(mask=-0.1, random=0.1), r"masking\.mask"),
    (dict(mask=0.5, random=-0.1), r"masking\.mask"),
])
def test_config_rejects_bad_shares(kwargs, field):
    """Rates outside (0, 1), negative shares and mask + random > 1 are ConfigErrors naming the field."""
    with pytest.raises(ConfigError, match=field):
        MaskingConfig(**kwargs)


def test_config_accepts_edge_shares():
    """mask + random == 1 and mask == random == 0 are valid settings."""
    MaskingConfig(rate=0.5, mask=0.0, random=1.0)
    MaskingConfig(rate=0.01, mask=0.0, random=0.0)
    MaskingConfig(rate=0.99, mask=0.6, random=0.4)
