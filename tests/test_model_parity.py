"""Parity with HF PyTorch BERT on real weights, weight import/export, bad files."""

import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from bert_jax import hf_weights  # noqa: E402
from bert_jax.data import registry  # noqa: E402
from bert_jax.heads import BertForPreTraining  # noqa: E402
from bert_jax.model import BertConfig, BertModel  # noqa: E402

TOL = 1e-4


def sotu_sentences(n: int, seed: int = 0) -> list[str]:
  """n real SOTU sentences with lengths spread from short to long."""
  files = sorted(registry.fetch('sotu').glob('*.json'))
  sentences = []
  for path in files[::8]:
    text = json.loads(path.read_text())['text']
    sentences += [s.strip() for s in re.split(r'(?<=[.!?])\s+', text)
                  if 3 <= len(s.split()) <= 120]
  sentences.sort(key=len)
  rng = np.random.default_rng(seed)
  # Stratify by length: one sentence from each of n length quantiles.
  bins = np.array_split(np.arange(len(sentences)), n)
  return [sentences[rng.choice(b)] for b in bins]


@pytest.fixture(scope='module')
def minilm():
  path = registry.fetch('minilm')
  config, params, _ = hf_weights.from_pretrained(path, load_tokenizer=False)
  hf = transformers.BertModel.from_pretrained(str(path)).eval()
  tok = transformers.BertTokenizerFast.from_pretrained(str(path))
  return path, config, params, hf, tok


def _batches(tok, sentences, batch_size=16, max_length=128):
  for i in range(0, len(sentences), batch_size):
    enc = tok(sentences[i:i + batch_size], padding=True, truncation=True,
              max_length=max_length, return_tensors='np')
    yield {k: enc[k].astype(np.int32) for k in
           ('input_ids', 'token_type_ids', 'attention_mask')}


def test_minilm_encoder_matches_hf_pytorch_on_64_real_sentences(minilm):
  _, config, params, hf, tok = minilm
  sentences = sotu_sentences(64)
  lengths = set()
  model = BertModel(config)
  apply = jax.jit(lambda p, b: model.apply({'params': p}, b['input_ids'],
                                           b['token_type_ids'],
                                           b['attention_mask']))
  worst_seq = worst_pool = 0.0
  for batch in _batches(tok, sentences):
    lengths.update(batch['attention_mask'].sum(1).tolist())
    seq, pooled = apply(params['bert'], batch)
    with torch.no_grad():
      out = hf(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})
    real = batch['attention_mask'].astype(bool)
    worst_seq = max(worst_seq, np.abs(np.asarray(seq)[real]
                                      - out.last_hidden_state.numpy()[real]).max())
    worst_pool = max(worst_pool, np.abs(np.asarray(pooled)
                                        - out.pooler_output.numpy()).max())
  assert len(lengths) > 20, 'sentences should span many lengths'
  assert worst_seq < TOL, worst_seq
  assert worst_pool < TOL, worst_pool


def test_scanned_layout_gives_the_same_outputs(minilm):
  path, config, params, _, tok = minilm
  sc_config, sc_params, _ = hf_weights.from_pretrained(
      path, load_tokenizer=False, scan_layers=True, remat_policy='full')
  assert 'layers' in sc_params['bert']['encoder']
  batch = next(_batches(tok, sotu_sentences(8)))
  a = BertModel(config).apply({'params': params['bert']}, **batch)
  b = BertModel(sc_config).apply({'params': sc_params['bert']}, **batch)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)
  back = hf_weights.unstack_layers(sc_params, config.num_hidden_layers)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


def _pretraining_outputs(config, params, batch, positions):
  model = BertForPreTraining(config)
  return model.apply({'params': params}, batch['input_ids'],
                     batch['token_type_ids'], batch['attention_mask'],
                     positions)


def _hf_pretraining_outputs(hf, batch, positions):
  with torch.no_grad():
    out = hf(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})
  mlm = np.take_along_axis(out.prediction_logits.numpy(),
                           positions[..., None], axis=1)
  return mlm, out.seq_relationship_logits.numpy()


def test_minilm_export_loads_in_hf_pretraining_and_heads_match(minilm, tmp_path):
  path, config, params, _, tok = minilm
  # MiniLM ships no MLM/NSP heads: they were initialised fresh and tied.
  assert set(params) == {'bert', 'mlm', 'nsp'}
  out_dir = hf_weights.export_hf(tmp_path / 'export', config, params,
                                 vocab=path / 'vocab.txt')
  hf, info = transformers.BertForPreTraining.from_pretrained(
      str(out_dir), output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  hf.eval()
  batch = next(_batches(tok, sotu_sentences(16, seed=1)))
  rng = np.random.default_rng(0)
  lengths = batch['attention_mask'].sum(1)
  positions = np.stack([np.sort(rng.choice(n, 5, replace=False))
                        for n in lengths]).astype(np.int32)
  mlm, nsp = _pretraining_outputs(config, params, batch, positions)
  hf_mlm, hf_nsp = _hf_pretraining_outputs(hf, batch, positions)
  assert np.abs(np.asarray(mlm) - hf_mlm).max() < 1e-3  # logits ~ O(10)
  assert np.abs(np.asarray(nsp) - hf_nsp).max() < TOL
  # Import of the export is exact.
  _, again, _ = hf_weights.from_pretrained(out_dir, load_tokenizer=False)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)


NON_DEFAULT = dict(vocab_size=211, hidden_size=48, num_hidden_layers=3,
                   num_attention_heads=6, intermediate_size=80,
                   type_vocab_size=3, max_position_embeddings=40)


@pytest.fixture(scope='module')
def random_hf(tmp_path_factory):
  torch.manual_seed(0)
  hf_config = transformers.BertConfig(**NON_DEFAULT)
  hf = transformers.BertForPreTraining(hf_config).eval()
  # Non-trivial biases and LayerNorm parameters, so a swapped name shows up.
  with torch.no_grad():
    for name, p in hf.named_parameters():
      if name.endswith('bias') or 'LayerNorm' in name:
        p.add_(0.1 * torch.randn_like(p))
  d = tmp_path_factory.mktemp('random_hf')
  hf.save_pretrained(str(d / 'st'))
  hf.save_pretrained(str(d / 'bin'), safe_serialization=False)
  return hf, d


def _random_batch(config, b=4, t=30, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, config.vocab_size, (b, t)).astype(np.int32)
  types = rng.integers(0, config.type_vocab_size, (b, t)).astype(np.int32)
  lengths = rng.integers(5, t + 1, b)
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  positions = np.stack([np.sort(rng.choice(n, 4, replace=False))
                        for n in lengths]).astype(np.int32)
  return dict(input_ids=ids, token_type_ids=types, attention_mask=mask), positions


@pytest.mark.parametrize('fmt', ['st', 'bin'])
def test_random_non_default_config_matches_hf(random_hf, fmt):
  hf, d = random_hf
  config, params, _ = hf_weights.from_pretrained(d / fmt, load_tokenizer=False)
  for k, v in NON_DEFAULT.items():
    assert getattr(config, k) == v
  batch, positions = _random_batch(config)
  mlm, nsp = _pretraining_outputs(config, params, batch, positions)
  hf_mlm, hf_nsp = _hf_pretraining_outputs(hf, batch, positions)
  np.testing.assert_allclose(np.asarray(mlm), hf_mlm, atol=TOL)
  np.testing.assert_allclose(np.asarray(nsp), hf_nsp, atol=TOL)
  seq, pooled = BertModel(config).apply({'params': params['bert']}, **batch)
  with torch.no_grad():
    out = hf.bert(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})
  real = batch['attention_mask'].astype(bool)
  np.testing.assert_allclose(np.asarray(seq)[real],
                             out.last_hidden_state.numpy()[real], atol=TOL)
  np.testing.assert_allclose(np.asarray(pooled), out.pooler_output.numpy(), atol=TOL)


def test_absent_heads_are_the_full_inits_and_heads_false_skips_them(
    random_hf, tmp_path):
  from safetensors.numpy import load_file, save_file
  _, d = random_hf
  # An encoder-only file (what sentence-transformers ship): no cls.* keys.
  weights = {k: v for k, v in load_file(str(d / 'st' / 'model.safetensors')).items()
             if not k.startswith('cls.')}
  enc = tmp_path / 'encoder_only'
  enc.mkdir()
  save_file(weights, str(enc / 'model.safetensors'))
  (enc / 'config.json').write_text((d / 'st' / 'config.json').read_text())
  config, params, _ = hf_weights.from_pretrained(enc, load_tokenizer=False,
                                                 seed=3)
  # Only the missing heads are drawn; they must be the full model's
  # (jitted) init. (Eager init rounds some values 1 ulp apart.)
  ids = np.zeros((1, 2), np.int32)
  full = jax.jit(lambda k: BertForPreTraining(config).init(
      k, ids, ids, ids, ids[:, :1]))(jax.random.PRNGKey(3))['params']
  for head in ('mlm', 'nsp'):
    jax.tree_util.tree_map(np.testing.assert_array_equal, params[head],
                           jax.device_get(full[head]))
  _, with_heads, _ = hf_weights.from_pretrained(d / 'st', load_tokenizer=False)
  for directory in (enc, d / 'st'):
    _, bare, _ = hf_weights.from_pretrained(directory, load_tokenizer=False,
                                            heads=False)
    assert set(bare) == {'bert'}
    jax.tree_util.tree_map(np.testing.assert_array_equal, bare['bert'],
                           with_heads['bert'])
  # heads=False still checks the head weights a file has.
  bad = tmp_path / 'bad_head'
  bad.mkdir()
  broken = dict(load_file(str(d / 'st' / 'model.safetensors')))
  broken['cls.predictions.bias'] = np.zeros(5, np.float32)
  save_file(broken, str(bad / 'model.safetensors'))
  (bad / 'config.json').write_text((d / 'st' / 'config.json').read_text())
  with pytest.raises(hf_weights.CheckpointError, match='cls.predictions.bias'):
    hf_weights.from_pretrained(bad, load_tokenizer=False, heads=False)


def test_tf_checkpoint_names_round_trip(random_hf):
  _, d = random_hf
  config, params, _ = hf_weights.from_pretrained(d / 'st', load_tokenizer=False)
  names = hf_weights.to_tf_names(config, params)
  # Google's variable names, plus optimizer slots that must be ignored.
  assert 'bert/encoder/layer_2/attention/self/query/kernel' in names
  assert 'cls/seq_relationship/output_weights' in names
  names['bert/embeddings/word_embeddings/adam_m'] = np.zeros(1)
  names['global_step'] = np.array(7)
  loaded = hf_weights.load_tf_checkpoint('ckpt', config, reader=lambda _: names)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)


def test_tf_checkpoint_file_written_with_google_names(random_hf, tmp_path):
  tf = pytest.importorskip('tensorflow')
  _, d = random_hf
  config, params, _ = hf_weights.from_pretrained(d / 'st', load_tokenizer=False)
  variables = {n: tf.Variable(v, name=n) for n, v in
               hf_weights.to_tf_names(config, params).items()}
  prefix = str(tmp_path / 'bert_model.ckpt')
  # tf.compat.v1 Saver writes the plain variable names Google's code used.
  tf.compat.v1.train.Saver(var_list=variables).save(None, prefix)
  loaded = hf_weights.load_tf_checkpoint(prefix, config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)


def test_bf16_compute_stays_close_to_fp32(minilm):
  path, config, params, _, tok = minilm
  batch = next(_batches(tok, sotu_sentences(8, seed=2)))
  ref = BertModel(config).apply({'params': params['bert']}, **batch)[0]
  bf16 = BertModel(config.replace(dtype='bfloat16')).apply(
      {'params': params['bert']}, **batch)[0]
  assert bf16.dtype == jnp.bfloat16
  real = batch['attention_mask'].astype(bool)
  err = np.abs(np.asarray(bf16, np.float32) - np.asarray(ref))[real]
  assert np.isfinite(err).all() and err.mean() < 0.05, err.mean()


# ----------------------------------------------------------------- bad inputs

def _copy_hf_dir(src, dst, drop=(), rename=None, reshape=None, extra=None,
                 vocab_lines=None):
  from safetensors.numpy import load_file, save_file
  dst.mkdir()
  state = load_file(str(src / 'model.safetensors'))
  for k in drop:
    del state[k]
  if rename:
    for a, b in rename.items():
      state[b] = state.pop(a)
  if reshape:
    for k, shape in reshape.items():
      state[k] = np.zeros(shape, np.float32)
  if extra:
    state.update(extra)
  save_file(state, str(dst / 'model.safetensors'))
  (dst / 'config.json').write_text((src / 'config.json').read_text())
  if vocab_lines is not None:
    (dst / 'vocab.txt').write_text('\n'.join(f't{i}' for i in range(vocab_lines)) + '\n')
  return dst


def test_missing_directory_and_files(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a directory'):
    hf_weights.from_pretrained(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match='config.json'):
    hf_weights.from_pretrained(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps(dict(NON_DEFAULT, model_type='bert')))
  with pytest.raises(FileNotFoundError, match='model.safetensors'):
    hf_weights.from_pretrained(tmp_path, load_tokenizer=False)
  with pytest.raises(FileNotFoundError, match='vocab.txt'):
    hf_weights.from_pretrained(tmp_path)


def test_vocab_size_mismatch_names_both_numbers(random_hf, tmp_path):
  _, d = random_hf
  bad = _copy_hf_dir(d / 'st', tmp_path / 'bad', vocab_lines=200)
  with pytest.raises(hf_weights.CheckpointError, match=r'200 entries.*vocab_size=211'):
    hf_weights.from_pretrained(bad)


def test_missing_encoder_key_is_named(random_hf, tmp_path):
  _, d = random_hf
  key = 'bert.encoder.layer.1.attention.self.key.weight'
  bad = _copy_hf_dir(d / 'st', tmp_path / 'bad', drop=[key])
  with pytest.raises(hf_weights.CheckpointError,
                     match=r'missing.*encoder\.layer\.1\.attention\.self\.key\.weight'):
    hf_weights.from_pretrained(bad, load_tokenizer=False)


def test_unknown_key_is_named(random_hf, tmp_path):
  _, d = random_hf
  bad = _copy_hf_dir(d / 'st', tmp_path / 'bad',
                     extra={'bert.encoder.layer.7.output.dense.weight': np.zeros((2, 2), np.float32)})
  with pytest.raises(hf_weights.CheckpointError, match=r'unknown.*layer\.7'):
    hf_weights.from_pretrained(bad, load_tokenizer=False)


def test_shape_mismatch_names_key_and_shapes(random_hf, tmp_path):
  _, d = random_hf
  key = 'bert.encoder.layer.0.intermediate.dense.weight'
  bad = _copy_hf_dir(d / 'st', tmp_path / 'bad', reshape={key: (81, 48)})
  with pytest.raises(hf_weights.CheckpointError,
                     match=r'intermediate\.dense\.weight.*\(81, 48\).*expects \(80, 48\)'):
    hf_weights.from_pretrained(bad, load_tokenizer=False)


def test_half_a_head_is_an_error_not_a_fresh_init(random_hf, tmp_path):
  _, d = random_hf
  bad = _copy_hf_dir(d / 'st', tmp_path / 'bad',
                     drop=['cls.predictions.transform.dense.bias'])
  with pytest.raises(hf_weights.CheckpointError, match='mlm weights partly missing'):
    hf_weights.from_pretrained(bad, load_tokenizer=False)


def test_pickled_objects_are_refused(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps(dict(NON_DEFAULT, model_type='bert')))

  class Evil:
    def __reduce__(self):
      return (print, ('this must never run',))
  torch.save({'x': Evil()}, str(tmp_path / 'pytorch_model.bin'))
  with pytest.raises(hf_weights.CheckpointError, match='weights_only=True'):
    hf_weights.from_pretrained(tmp_path, load_tokenizer=False)


def test_bad_config_values():
  with pytest.raises(ValueError, match='not divisible'):
    BertConfig(hidden_size=50, num_attention_heads=6)
  with pytest.raises(ValueError, match='hidden_act'):
    BertConfig(hidden_act='gelu_fast_typo')
  with pytest.raises(ValueError, match='remat_policy'):
    BertConfig(remat_policy='some')
  with pytest.raises(ValueError, match='longer|exceeds'):
    c = BertConfig(**NON_DEFAULT)
    ids = jnp.ones((1, 41), jnp.int32)
    BertModel(c).init(jax.random.PRNGKey(0), ids)
