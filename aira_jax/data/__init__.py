"""Data for AIRA-JAX: document sources, tokenisers with byte accounting, grain pipelines, bits-per-byte."""
from aira_jax.data.bpb import BpbAccumulator, bits_per_byte, bits_per_byte_from_tokens, token_nll
from aira_jax.data.config import default_data_config
from aira_jax.data.pipeline import TrainIterator, make_eval_batches, make_train_iterator
from aira_jax.data.sources import (
    DocumentSource,
    ListSource,
    SubsetSource,
    default_openstax_path,
    load_splits,
    make_source,
    read_jsonl_files,
    read_text_files,
    split_source,
)
from aira_jax.data.synthetic import SyntheticSource, generate_document, unigram_entropy
from aira_jax.data.tokenizers import (
    ByteTokenizer,
    SentencePieceTokenizer,
    SentencePieceTrainOptions,
    Tokenizer,
    make_tokenizer,
)

__all__ = [
    'BpbAccumulator', 'ByteTokenizer', 'DocumentSource', 'ListSource', 'SentencePieceTokenizer',
    'SentencePieceTrainOptions', 'SubsetSource', 'SyntheticSource', 'Tokenizer', 'TrainIterator',
    'bits_per_byte', 'bits_per_byte_from_tokens', 'default_data_config', 'default_openstax_path',
    'generate_document', 'load_splits', 'make_eval_batches', 'make_source', 'make_tokenizer',
    'make_train_iterator', 'read_jsonl_files', 'read_text_files', 'split_source', 'token_nll',
    'unigram_entropy',
]
