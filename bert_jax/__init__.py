"""bert_jax: BERT pretraining and fine-tuning in JAX/Flax."""

from bert_jax.hf_weights import export_hf, from_pretrained
from bert_jax.model import BertConfig, BertModel

__all__ = ['BertConfig', 'BertModel', 'export_hf', 'from_pretrained']
