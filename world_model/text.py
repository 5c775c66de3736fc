"""Instruction encoding: the real UMT5 encoder class, and an offline tokenizer for the tiny preset.

Real checkpoints ship ``tokenizer/`` (UMT5's SentencePiece) and ``text_encoder/`` (``UMT5EncoderModel``),
loaded with ``from_pretrained``. At tiny scale nothing can be downloaded, so ``build_word_tokenizer``
builds a word-level tokenizer from the task instructions (all of them, held-out ones included, so an
unseen paraphrase of known words still tokenises) with T5's special-token ids (pad 0, eos 1, unk 2), and
``tiny_text_encoder`` makes a randomly initialised ``UMT5EncoderModel`` of a few layers. Both are saved
with ``save_pretrained`` in the same layout as the real ones.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def build_word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Lower-cased, whitespace/punctuation split, one id per word seen in ``texts``; appends ``</s>``."""
    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    words = sorted({w for text in texts for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))})
    vocab = {PAD: 0, EOS: 1, UNK: 2} | {w: i + 3 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def tiny_text_encoder(vocab_size: int, d_model: int = 32, num_layers: int = 2, num_heads: int = 2,
                      d_ff: int = 64, seed: int = 0) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=vocab_size, d_model=d_model, d_kv=d_model // num_heads, d_ff=d_ff,
                        num_layers=num_layers, num_heads=num_heads, relative_attention_num_buckets=8,
                        relative_attention_max_distance=32, dropout_rate=0.0, feed_forward_proj="gated-gelu",
                        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return UMT5EncoderModel(config).eval()


@torch.no_grad()
def encode_instructions(tokenizer, text_encoder: UMT5EncoderModel, texts: list[str], max_length: int
                        ) -> torch.Tensor:
    """Texts -> (B, max_length, d_model); positions past each text's end are zero (as Wan pads)."""
    batch = tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=True,
                      return_tensors="pt")
    device = text_encoder.device
    mask = batch.attention_mask.to(device)
    states = text_encoder(batch.input_ids.to(device), attention_mask=mask).last_hidden_state
    return states * mask.unsqueeze(-1).to(states.dtype)
