"""A tiny random BERT (1 layer, width 16) with a WordPiece vocabulary of the synthetic shards' words,
saved as a local Hugging Face folder: the trainer loads it as any `encoder` folder, in a fraction of
the time MiniLM's 22.7M parameters take, for tests of what surrounds the encoder (sweeps, systems)."""

from __future__ import annotations

from pathlib import Path

from shard_factory import SENTIMENT, WORDS

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HIDDEN = 16


def make_tiny_bert(folder: Path) -> Path:
    """Write the tokenizer and a seeded random BertModel (hidden 16, 1 layer, 2 heads) to `folder`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted({w.lower() for w in WORDS} | set(SENTIMENT))
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder
