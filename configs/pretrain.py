r"""MLM + NSP pretraining.

  python -m bert_jax.main --config=configs/pretrain.py:tiny --workdir=/tmp/pt
Variants: tiny (2 CPU cores, minutes), mini, base, large (BERT paper
hyperparameters; large with LAMB large-batch settings), minilm_continued
(continued pretraining of MiniLM on BBC news), chinese_msra (a small Chinese
BERT on the MSRA NER training sentences with the bert-base-chinese vocab, the
encoder for `configs/finetune.py:msra_ner`; about 20 minutes alone on 2 CPU
cores, estimated from its step rate).
"""

import ml_collections

from configs import common

VARIANTS = ('tiny', 'mini', 'base', 'large', 'minilm_continued', 'chinese_msra')


def get_config(arg: str = 'tiny') -> ml_collections.ConfigDict:
  if arg not in VARIANTS:
    raise ValueError(f'configs/pretrain.py:{arg}: unknown variant; known: {VARIANTS}')
  c = common.base_config()
  c.task = 'pretrain'
  c.data = ml_collections.ConfigDict(dict(
      corpus='sotu',          # registry corpus (sotu, bbc, msra), path, or tfds:<name>
      vocab='',               # vocab.txt / HF dir / 'minilm'; '' trains WordPiece
      vocab_size=8000,        # size of the trained vocab when vocab == ''
      shards='',              # offline ArrayRecord shards (glob) instead of corpus
      max_seq_length=128, max_predictions_per_seq=20, masked_lm_prob=0.15,
      short_seq_prob=0.1, dupe_factor=5, whole_word=False,
      masking='dynamic',      # 'dynamic' (in the step) or 'static'
      eval_fraction=0.05, max_eval_examples=2048))
  c.optim.update(name='adamw', lr=1e-4, weight_decay=0.01, warmup_fraction=0.01,
                 decay='linear', clip_global_norm=1.0)
  if arg == 'tiny':
    c.model.update(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=512, max_position_embeddings=128)
    c.data.max_seq_length = 128
    c.batch_size = 32
    c.total_steps = 3000
    c.optim.update(lr=1e-3, warmup_fraction=0.05)
    c.log_every, c.eval_every, c.checkpoint_every = 100, 500, 500
  elif arg == 'mini':
    c.model.update(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                   intermediate_size=1024)
    c.batch_size, c.total_steps = 128, 100_000
    c.optim.update(lr=5e-4, warmup_steps=2000, warmup_fraction=None)
  elif arg == 'base':   # Devlin et al.: 1M steps, batch 256, Adam 1e-4, 10k warmup
    c.batch_size, c.total_steps = 256, 1_000_000
    c.optim.update(lr=1e-4, warmup_steps=10_000, warmup_fraction=None)
    c.model.dtype = 'bfloat16'
  elif arg == 'large':  # You et al. 2019 (LAMB), phase 1: batch 64k... scaled: 32k, seq 128
    c.model.update(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                   intermediate_size=4096, dtype='bfloat16', scan_layers=True,
                   remat_policy='dots_no_batch')
    c.batch_size, c.total_steps = 32768, 7038
    c.optim.update(name='lamb', lr=6e-3, warmup_fraction=0.2843, decay='polynomial',
                   power=0.5, weight_decay=0.01, b2=0.999)
    c.sharding = 'fsdp'
    c.mesh.update(data=1, fsdp=-1)
  elif arg == 'minilm_continued':
    c.model.init_from = 'minilm'   # its config.json fixes the architecture
    c.data.corpus = 'bbc'
    c.data.vocab = 'minilm'
    c.data.dupe_factor = 1
    c.batch_size, c.total_steps = 16, 300
    c.optim.update(lr=5e-5, warmup_fraction=0.1)
    c.log_every, c.eval_every, c.checkpoint_every = 25, 100, 100
  elif arg == 'chinese_msra':
    # No Chinese BERT weights ship in a registry package: this one is trained
    # on the MSRA training sentences (their text only; the test set is not
    # seen), shaped like configs/finetune.py:msra_ner's encoder. Sentences
    # average ~39 characters (one token each), so seq 64 wastes little.
    c.data.corpus = 'msra'
    c.data.vocab = 'bert_chinese_vocab'   # a registry name, fetched at run start
    c.data.max_seq_length = 64
    c.data.max_predictions_per_seq = 10
    c.model.update(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                   intermediate_size=1024, max_position_embeddings=128)
    c.batch_size, c.total_steps = 32, 3000
    c.optim.update(lr=5e-4, warmup_fraction=0.05)
    c.log_every, c.eval_every, c.checkpoint_every = 100, 500, 500
  return c


def sweep(add):
  for lr in (5e-4, 1e-3):
    add(**{'optim.lr': lr})
