"""Task ``summarization``: an encoder-decoder (``model.arch: encoder_decoder``, the translation model) or a GPT
reading ``document <s> summary`` (``model.arch: decoder``), trained by teacher forcing and scored by the ROUGE of
its decoded summaries (``rouge.py``: equal to the rouge-score package, on 0-100).

``model.init_from`` starts the encoder of an encoder-decoder from a ``masked_lm`` run, or the decoder-only model
from a ``causal_lm`` run (``Task.setup``); the run's tokenizer comes with it (``tokenization.start_end_ids`` finds its special
tokens). Decoding (``decode``) is translation's: beam search with a length penalty, minimum and maximum length,
no repeated n-gram, or sampling; a GPT decodes with its KV cache, documents of one length at a time.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmtemplate.config import ConfigError
from lmtemplate.data.summarization import (ARCHS, SummarizationDataConfig, SummarizationDataModule,
                                           SummarizationTokenizerConfig)
from lmtemplate.data.tables import read_table
from lmtemplate.models.backbone import build_model
from lmtemplate.models.beam_search import decoder_stepper
from lmtemplate.models.gpt import GPT, Block, GPTConfig
from lmtemplate.models.seq2seq import DecoderBlock, Seq2Seq, Seq2SeqConfig
from lmtemplate.registry import register_task
from lmtemplate.tasks.base import OptimConfig, per_stage, token_cross_entropy
from lmtemplate.tasks.decoding import DecodeConfig, GenerationTask, generate
from lmtemplate.tasks.rouge import ROUGE


TABLES = (".jsonl", ".tsv", ".csv")


@dataclass
class SummarizationModelConfig(Seq2SeqConfig):
    """The encoder-decoder's shape, or with ``arch: decoder`` a GPT's (``n_layer`` blocks; the decoder-only
    fields only)."""

    arch: str = "encoder_decoder"

    def __post_init__(self):
        super().__post_init__()
        if self.arch not in ARCHS:
            raise ConfigError(f"model.arch: '{self.arch}' is not one of {', '.join(ARCHS)}")


@dataclass
class SummarizationDecodeConfig(DecodeConfig):
    max_len_a: float = 0.0  # summaries do not grow with their documents: max_len_b tokens at most
    max_len_b: int = 64
    val_sentences: int = 200  # ROUGE at each validation on the first N validation examples
    rouge_stemmer: bool = True  # ROUGE with Porter stemming (as rouge-score's use_stemmer=True)


@dataclass
class SummarizationConfig:
    model: SummarizationModelConfig = field(default_factory=SummarizationModelConfig)
    data: SummarizationDataConfig = field(default_factory=SummarizationDataConfig)
    tokenizer: SummarizationTokenizerConfig = field(default_factory=SummarizationTokenizerConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, betas=[0.9, 0.98], weight_decay=0.01,
                                                                   warmup_steps=100))
    decode: SummarizationDecodeConfig = field(default_factory=SummarizationDecodeConfig)


@register_task("summarization", config=SummarizationConfig, datamodule=SummarizationDataModule)
class Summarization(GenerationTask):
    metrics = {"val/rougeL": "max", "val/rouge1": "max", "val/rouge2": "max", "val/rougeLsum": "max", "val/loss": "min"}
    blocks = (Block, DecoderBlock)
    predictions_file = "summaries.txt"
    sample_columns = ("source", "reference", "summary")
    output_key = "summary"

    def __init__(self, cfg: SummarizationConfig, datamodule: SummarizationDataModule):
        super().__init__(cfg)
        m, vocab = cfg.model, datamodule.tokenizer.get_vocab_size()
        if m.arch == "decoder":
            shape = {f.name: getattr(m, f.name) for f in dataclasses.fields(GPTConfig)}
            self.model = build_model(GPT, GPTConfig(**shape), vocab)
        else:
            self.model = build_model(Seq2Seq, dataclasses.replace(m, src_vocab_size=m.src_vocab_size or vocab), vocab)
        self.tokenizer = datamodule.tokenizer
        self.bos_id, self.eos_id = datamodule.bos_id, datamodule.eos_id
        self.text_metrics = per_stage(ROUGE(stem=cfg.decode.rouge_stemmer))

    def forward(self, batch: dict) -> torch.Tensor:
        if isinstance(self.model, GPT):
            return self.model(batch["input_ids"])
        return self.model(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])

    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy per summary token (and the end token); a decoder's document has no labels."""
        return token_cross_entropy(self(batch), batch["labels"])

    @torch.no_grad()
    def summarize(self, batch: dict, rows: list[int], beam_size: int) -> list[str]:
        """Decoded summaries of the batch's examples ``rows``."""
        d = self.cfg.decode
        if isinstance(self.model, Seq2Seq):
            src, mask = batch["input_ids"][rows], batch["attention_mask"][rows]
            max_lengths = d.max_lengths(mask.sum(1), self.model.cfg.block_size)
            ids = generate(lambda copies: self.model.stepper(src, mask, copies), self.bos_id, self.eos_id, max_lengths,
                           d, beam_size)
        else:
            ids = self._continue([batch["prompts"][i] for i in rows], beam_size)
        return [text.strip() for text in self.tokenizer.decode_batch(ids, skip_special_tokens=True)]

    def _continue(self, prompts: list[list[int]], beam_size: int) -> list[list[int]]:
        """The GPT's summary ids after each document, decoded in groups of equal length (no padding, one cache)."""
        by_length, out = defaultdict(list), [[] for _ in prompts]
        for i, prompt in enumerate(prompts):
            by_length[len(prompt)].append(i)
        room = self.cfg.data.max_target_tokens
        for length, rows in by_length.items():
            prompt = torch.tensor([prompts[i] for i in rows], dtype=torch.long, device=self.device).view(len(rows), length)
            max_lengths = self.cfg.decode.max_lengths(torch.full((len(rows),), length, device=self.device), room)
            ids = generate(lambda copies: decoder_stepper(self.model, prompt, copies), self.bos_id, self.eos_id,
                           max_lengths, self.cfg.decode, beam_size)
            for i, summary in zip(rows, ids):
                out[i] = summary
        return out

    def decode_rows(self, batch: dict, rows: list[int], beam_size: int) -> list[str]:
        return self.summarize(batch, rows, beam_size)

    def read_predict_inputs(self, path: Path) -> list[str]:
        """A table's ``data.source_column`` (documents may hold line breaks, as dialogues do), else one document
        per line of the file."""
        if Path(path).suffix in TABLES:
            column = self.cfg.data.source_column
            return [str(row[column]) for row in read_table(path, {column: "data.source_column"}).rows]
        return super().read_predict_inputs(path)
