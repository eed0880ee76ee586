"""Task ``masked_lm``: BERT-style pretraining of a bidirectional encoder on the causal LM's corpus and token cache
(docs/tasks/masked_lm.md). Masking runs on the batch, on the device: random in training, fixed in evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import Perplexity

from lmtemplate.config import ConfigError
from lmtemplate.data.base import IGNORE
from lmtemplate.data.masking import MaskedLMDataConfig, MaskedLMDataModule, MaskingConfig, mask_tokens
from lmtemplate.models.backbone import build_model
from lmtemplate.models.encoder import Encoder, EncoderConfig, MaskedLMHead
from lmtemplate.registry import register_task
from lmtemplate.tasks.base import LanguageModel, OptimConfig, configure_adamw, per_stage
from lmtemplate.tokenization import ENCODER_SPECIALS, EncoderTokenizerConfig


@dataclass
class MaskedLMConfig:
    model: EncoderConfig = field(default_factory=lambda: EncoderConfig(dropout=0.1))
    data: MaskedLMDataConfig = field(default_factory=MaskedLMDataConfig)
    tokenizer: EncoderTokenizerConfig = field(default_factory=EncoderTokenizerConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, betas=[0.9, 0.98], warmup_steps=100))
    masking: MaskingConfig = field(default_factory=MaskingConfig)


@register_task("masked_lm", config=MaskedLMConfig, datamodule=MaskedLMDataModule)
class MaskedLM(LanguageModel):
    metrics = {"val/loss": "min", "val/accuracy": "max", "val/ppl": "min"}

    def __init__(self, cfg: MaskedLMConfig, datamodule: MaskedLMDataModule):
        super().__init__(cfg)
        tok = datamodule.tokenizer
        ids = {t: tok.token_to_id(t) for t in ENCODER_SPECIALS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ConfigError(f"tokenizer: the tokenizer has no {', '.join(missing)} token; masked_lm needs {ENCODER_SPECIALS}")
        self.cls_id, self.mask_id = ids["[CLS]"], ids["[MASK]"]
        self.model = build_model(Encoder, cfg.model, tok.get_vocab_size())
        self.mlm_head = MaskedLMHead(self.model.cfg, self.model.tok_emb)
        self.register_buffer("special_ids", torch.tensor(sorted(ids.values())), persistent=False)
        self.accuracy = per_stage(MulticlassAccuracy(self.model.cfg.vocab_size, average="micro"))
        self.ppl = per_stage(Perplexity())

    def scored(self, batch, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels at the masked positions of packed windows (a tensor) or padded documents (a dict)."""
        if isinstance(batch, dict):
            ids, attention = batch["input_ids"], batch["attention_mask"]
        else:  # packed windows: [CLS] + the first block_size - 1 tokens of each
            cls = torch.full_like(batch[:, :1], self.cls_id)
            ids, attention = torch.cat([cls, batch[:, : self.cfg.model.block_size - 1]], dim=1), None
        inputs, labels = mask_tokens(ids, self.cfg.masking, self.mask_id, self.special_ids, self.model.cfg.vocab_size,
                                     generator)
        selected = labels != IGNORE
        return self.mlm_head(self.model(inputs, attention)[selected]), labels[selected]  # the vocabulary only there

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)  # the same masks at every validation
        logits, labels = self.scored(batch, generator)
        self.accuracy[stage].update(logits, labels)
        self.log_scores(stage, logits, labels, batch_size=len(labels))  # every masked token weighs the same
        self.log(f"{stage}/accuracy", self.accuracy[stage], prog_bar=True)

    def configure_optimizers(self):
        head = [p for name, p in self.mlm_head.named_parameters() if not name.startswith("embedding.")]  # tied: in the model's groups
        return configure_adamw(self, self.model.param_groups(self.cfg.optim.weight_decay)
                               + [{"params": head, "weight_decay": 0.0}], self.cfg.optim)
