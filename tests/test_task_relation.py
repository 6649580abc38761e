"""Relation classification task: inputs of the three methods, truncation,
metrics, bad input, and tiny training runs.

No relation corpus ships with bert_jax, so the data is a constructed
SemEval-2010 Task 8 file: templated sentences, a dozen per relation over
three relations, with cue words a tiny model can learn.
"""

import json

import jax
import numpy as np
import optax
import pytest

from bert_jax import tokenization
from bert_jax import train
from bert_jax.data import examples as ex
from bert_jax.data import registry
from bert_jax.tasks import relation
from configs import common as common_configs
from configs import finetune as finetune_configs
from tests import frozen_check

# (label, templates); {h} is the head (<e1>), {t} the tail (<e2>).
RELATIONS = (
    ('Cause-Effect(e1,e2)', ('The {h} caused the {t} .',
                             'A {h} has caused severe {t} here .',
                             'Our {h} quickly caused the {t} .')),
    ('Component-Whole(e1,e2)', ('The {h} is a part of the {t} .',
                                'Each {h} is an essential part of a {t} .',
                                'That {h} was part of our {t} .')),
    ('Other', ('The {h} stood next to the {t} .',
               'A {h} was seen near the {t} yesterday .',
               'His {h} lay beside a {t} .')),
)
# Entity words; several split into more than one WordPiece
# ('unbelievability', 'hamburgers', 'Zylberstein'), and some are two words.
HEADS = ('fire', 'earthquake', 'unbelievability', 'virus', 'steering wheel',
         'hamburgers', 'Zylberstein', 'storm', 'engine', 'battery', 'leaf',
         'crankshaft')
TAILS = ('smoke', 'damage', 'headache', 'fever', 'car', 'lunch box', 'tree',
         'flood', 'airplane', 'phone', 'branch', 'motorcycle engine')


def semeval_text(per_relation=12, offset=0, long_every=0):
  """A SemEval-format file body: ids from 1 + offset, deterministic.

  long_every: every n-th sentence gets 40 filler words before the tail.
  """
  blocks, sid = [], offset
  for k in range(per_relation):
    for label, templates in RELATIONS:
      sid += 1
      template = templates[k % len(templates)]
      # Strides coprime with 12 visit every entity.
      head = HEADS[5 * sid % len(HEADS)]
      tail = TAILS[(7 * sid + 1) % len(TAILS)]
      if long_every and sid % long_every == 0:
        tail = ' '.join(['very'] * 40) + ' <e2>' + tail
      else:
        tail = '<e2>' + tail
      sentence = template.format(h=f'<e1>{head}</e1>', t=f'{tail}</e2>')
      blocks.append(f'{sid}\t"{sentence}"\n{label}\nComment:\n')
  return '\n'.join(blocks)


@pytest.fixture(scope='module')
def data_files(tmp_path_factory):
  d = tmp_path_factory.mktemp('semeval')
  (d / 'TRAIN_FILE.TXT').write_text(semeval_text(12))
  (d / 'TEST_FILE_FULL.TXT').write_text(semeval_text(4, offset=1000))
  (d / 'LONG.TXT').write_text(semeval_text(4, offset=2000, long_every=4))
  return d


@pytest.fixture(scope='module')
def tok():
  return tokenization.BertTokenizer.from_pretrained_dir(
      registry.fetch('minilm'))


def tiny_config(data_files, method='entity_markers', **data):
  c = finetune_configs.get_config('semeval')
  c.relation_method = method
  c.model.init_from = ''
  c.data.vocab = 'minilm'
  c.model.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  c.data.update(dict(train=str(data_files / 'TRAIN_FILE.TXT'),
                     eval=str(data_files / 'TEST_FILE_FULL.TXT'),
                     max_seq_length=32), **data)
  c.batch_size, c.eval_batch_size = 8, 16
  c.total_steps, c.log_every, c.checkpoint_every = 40, 5, 1000
  c.optim.update(lr=3e-3, warmup_fraction=0.05)
  return c


def ids_of(tok, words):
  return [tok.token_to_id(p) for w in words for p in tok.tokenize(w)]


def test_constructed_file_reads_as_semeval(data_files):
  c = tiny_config(data_files)
  task = relation.RelationTask(c)
  assert task.label_names == sorted(l for l, _ in RELATIONS)
  assert task.class_counts == [12, 12, 12]
  assert len(task.eval_ds) == 12 and task.other == 'Other'
  assert any(len(e.words[e.head[0]:e.head[1]]) == 2
             for e in task.train_ds.examples)


def test_entity_markers_inputs(data_files, tok):
  task = relation.RelationTask(tiny_config(data_files, 'entity_markers'))
  f = task.train_features
  hs, he, ts, te = (tok.token_to_id(m) for m in relation.MARKER_TOKENS)
  assert 'head_mask' not in f and 'entity_ids' not in f
  for row, i in enumerate(f['example_index']):
    e = task.train_ds.examples[i]
    ids = f['input_ids'][row].tolist()
    h, t = f['head_start'][row], f['tail_start'][row]
    assert ids[h] == hs and ids[t] == ts
    head = ids_of(tok, e.words[slice(*e.head)])
    tail = ids_of(tok, e.words[slice(*e.tail)])
    assert ids[h + 1:h + 1 + len(head)] == head and ids[h + 1 + len(head)] == he
    assert ids[t + 1:t + 1 + len(tail)] == tail and ids[t + 1 + len(tail)] == te
    # The sentence is intact apart from the 4 markers.
    n = int(f['attention_mask'][row].sum())
    body = [x for x in ids[1:n - 1] if x not in (hs, he, ts, te)]
    assert body == ids_of(tok, e.words)
    assert ids[0] == tok.cls_id and ids[n - 1] == tok.sep_id


def test_entity_pool_masks_cover_exactly_the_entity(data_files, tok):
  task = relation.RelationTask(tiny_config(data_files, 'entity_pool'))
  f = task.train_features
  assert set(f) >= {'head_mask', 'tail_mask'} and 'head_start' not in f
  multi = 0
  for row, i in enumerate(f['example_index']):
    e = task.train_ds.examples[i]
    ids = f['input_ids'][row]
    for mask, span in ((f['head_mask'][row], e.head),
                       (f['tail_mask'][row], e.tail)):
      pos = np.flatnonzero(mask)
      want = ids_of(tok, e.words[slice(*span)])
      # Contiguous, starting where the entity's words start, and nothing else.
      assert pos.tolist() == list(range(pos[0], pos[0] + len(want)))
      assert ids[pos].tolist() == want
      assert pos[0] == 1 + len(ids_of(tok, e.words[:span[0]]))
      assert set(np.unique(mask)) <= {0.0, 1.0}
      multi += len(want) > 1
  assert multi > 0


def test_entity_embeddings_ids(data_files, tok):
  task = relation.RelationTask(tiny_config(data_files, 'entity_embeddings'))
  assert task.bert_config.num_entity_types == 3
  f = task.train_features
  for row, i in enumerate(f['example_index']):
    e = task.train_ds.examples[i]
    ids, roles = f['input_ids'][row], f['entity_ids'][row]
    assert set(np.unique(roles)) == {0, 1, 2}
    assert ids[roles == 1].tolist() == ids_of(tok, e.words[slice(*e.head)])
    assert ids[roles == 2].tolist() == ids_of(tok, e.words[slice(*e.tail)])
    assert roles[0] == 0 and not roles[f['attention_mask'][row] == 0].any()


def test_nested_entities_keep_markers_nested(tok):
  e = ex.RelationExample('n1', ['Bank', 'of', 'England', 'rose'], (0, 3),
                         (2, 3), 'x')
  markers = relation.marker_ids(tok)
  f, kept, skipped = relation.encode_relations(tok, [e], 'entity_markers', 16,
                                               markers)
  hs, he, ts, te = markers
  words = [ids_of(tok, [w]) for w in e.words]
  want = ([tok.cls_id, hs] + words[0] + words[1] + [ts] + words[2] + [te, he]
          + words[3] + [tok.sep_id])
  assert f['input_ids'][0, :len(want)].tolist() == want
  assert f['head_start'][0] == 1 and f['tail_start'][0] == want.index(ts)
  assert kept == [0] and not skipped
  f, _, _ = relation.encode_relations(tok, [e], 'entity_pool', 16)
  assert f['head_mask'][0].sum() == sum(map(len, words[:3]))
  assert f['tail_mask'][0].sum() == len(words[2])


def test_truncated_entity_is_skipped_or_an_error(data_files, tok):
  long_file = str(data_files / 'LONG.TXT')
  for method in relation.RELATION_METHODS:
    task = relation.RelationTask(tiny_config(data_files, method,
                                             eval=long_file))
    # Every 4th of the 12 sentences has the tail 40 words in: beyond 32.
    assert len(task.skipped['eval']) == 3
    assert len(task.eval_kept) == 9 == len(task.eval_features['labels'])
    assert all(task.eval_ds.examples[i].guid not in task.skipped['eval']
               for i in task.eval_kept)
  # The boundary: an entity ending exactly at position T-2 fits, one more
  # sub-token does not.
  e = ex.RelationExample('b', ['a', 'b', 'c', 'd'], (0, 1), (3, 4), 'x')
  for method, fits in (('entity_pool', 6), ('entity_markers', 10)):
    markers = relation.marker_ids(tok) if method == 'entity_markers' else None
    _, kept, _ = relation.encode_relations(tok, [e], method, fits, markers)
    assert kept == [0]
    _, kept, skipped = relation.encode_relations(tok, [e], method, fits - 1,
                                                 markers)
    assert kept == [] and skipped == ['b']
  with pytest.raises(ValueError, match=r"LONG\.TXT.*3 of 12.*max_seq_length"):
    relation.RelationTask(tiny_config(data_files, eval=long_file,
                                      entity_truncation='raise'))


def test_bad_input(data_files, tmp_path):
  # The Chinese vocabulary has no [unused0].
  c = tiny_config(data_files)
  c.data.vocab = str(registry.fetch('bert_chinese_vocab') / 'vocab.txt')
  with pytest.raises(ValueError, match=r'lacks \[unused0\]'):
    relation.RelationTask(c)
  with pytest.raises(ValueError, match='relation_method'):
    relation.RelationTask(tiny_config(data_files, 'cls'))
  with pytest.raises(ValueError, match='entity_truncation'):
    relation.RelationTask(tiny_config(data_files, entity_truncation='drop'))
  c = tiny_config(data_files)
  c.data.train = ''
  with pytest.raises(ValueError, match='no relation data ships'):
    relation.RelationTask(c)
  unseen = tmp_path / 'unseen.txt'
  unseen.write_text('7\t"The <e1>key</e1> opens the <e2>door</e2> ."\n'
                    'Instrument-Agency(e1,e2)\nComment:\n')
  with pytest.raises(ValueError, match=r"'7'.*'Instrument-Agency\(e1,e2\)'.*"
                     'not in the training label set'):
    relation.RelationTask(tiny_config(data_files, eval=str(unseen)))


def test_metrics_exclude_other_and_semeval_score():
  names = ['Cause-Effect(e1,e2)', 'Cause-Effect(e2,e1)', 'Other']
  gold = np.array([0, 0, 1, 2, 2, 2])
  pred = np.array([0, 1, 1, 2, 0, 2])
  m = relation.relation_metrics(pred, gold, names, 'Other')
  f1 = {n: m[f'f1/{n}'] for n in names}
  # CE(e1,e2): tp 1, 2 gold, 2 pred -> 0.5; CE(e2,e1): tp 1, 1 gold, 2 pred
  # -> 2/3; Other: tp 2, 3 gold, 2 pred -> 0.8.
  assert f1 == pytest.approx({names[0]: 0.5, names[1]: 2 / 3, names[2]: 0.8})
  assert m['macro_f1'] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
  assert m['macro_f1_excl_other'] == pytest.approx((0.5 + 2 / 3) / 2)
  # Official (9+1)-way directional: Cause-Effect has 2 direction-correct hits
  # of 3 gold and 4 predicted (either direction) -> F1 = 4/7.
  assert m['semeval_macro_f1'] == pytest.approx(4 / 7)
  no_other = relation.relation_metrics(pred, gold, ['a', 'b', 'c'], None)
  assert no_other['macro_f1_excl_other'] == no_other['macro_f1']
  assert 'semeval_macro_f1' not in no_other
  assert relation.other_label(['x', 'no_relation']) == 'no_relation'
  with pytest.raises(ValueError, match='other_label'):
    relation.other_label(['x'], 'Other')


def test_posthoc_logit_adjustment(data_files):
  # A sample of 20 of the 36 balanced training examples: unequal counts.
  c = tiny_config(data_files, max_train_examples=20)
  c.eval_logit_adjustment_tau = 1.5
  task = relation.RelationTask(c)
  assert len(set(task.class_counts)) > 1, task.class_counts
  f = task.eval_features
  n, k = len(f['labels']), len(task.label_names)
  logits = np.random.default_rng(0).normal(0, 1, (n, k)).astype(np.float32)
  outputs = dict(logits=logits, labels=f['labels'],
                 weights=np.ones(n, np.float32),
                 example_index=np.arange(n, dtype=np.int32))
  out = task.summarize_eval({'ce_loss': 0.0}, outputs)
  counts = np.asarray(task.class_counts, np.float64)
  ref = np.argmax(logits - 1.5 * np.log(counts / counts.sum()), -1)
  assert [r['adjusted_prediction'] for r in out['_predictions']] == [
      task.label_names[i] for i in ref]
  assert (ref != np.argmax(logits, -1)).any()   # the prior changed something
  want = relation.relation_metrics(ref, f['labels'], task.label_names,
                                   task.other)
  assert out['adjusted_macro_f1'] == want['macro_f1']
  assert out['adjusted_macro_f1_excl_other'] == want['macro_f1_excl_other']
  assert out['macro_f1'] == relation.relation_metrics(
      np.argmax(logits, -1), f['labels'], task.label_names,
      task.other)['macro_f1']


def test_pretrained_encoder_keeps_fresh_entity_embeddings(data_files):
  c = tiny_config(data_files, 'entity_embeddings')
  c.model.init_from = 'minilm'
  # The tiny model's sizes are not MiniLM's: named, not ignored.
  with pytest.raises(ValueError, match=r"^config\.model\.\w+=.* "
                     r"config\.model\.init_from='minilm' has"):
    relation.RelationTask(c)
  c.model = common_configs.model_config(init_from='minilm')
  task = relation.RelationTask(c)
  assert task.bert_config.hidden_size == 384
  assert task.bert_config.num_entity_types == 3
  batch = next(task.train_iterator(8, 0, 1, seed=0))
  shapes = jax.eval_shape(task.init_params, jax.random.PRNGKey(0), batch)
  fresh = jax.tree_util.tree_map(lambda s: np.full(s.shape, 0.5, s.dtype),
                                 shapes)
  loaded = task.pretrained_params(fresh)
  emb = loaded['bert']['embeddings']
  assert (emb['entity_embeddings']['embedding'] == 0.5).all()
  assert not (emb['word_embeddings']['embedding'] == 0.5).any()
  assert (loaded['relation']['kernel'] == 0.5).all()   # the head stays fresh


def fit(task, steps, lr=1e-2):
  """Plain Adam on the task's train_loss; per-step losses."""
  it = task.train_iterator(8, 0, 1, seed=0)
  first = next(it)
  params = task.init_params(jax.random.PRNGKey(0), first)
  tx = optax.adam(lr)
  opt, state = tx.init(params), task.init_loss_state()

  @jax.jit
  def step(params, opt, state, batch, rng):
    (loss, (_, state)), grads = jax.value_and_grad(
        task.train_loss, has_aux=True)(params, batch, rng, state)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, state, loss

  it = task.train_iterator(8, 0, 1, seed=0)
  out = []
  for k in range(steps):
    params, opt, state, loss = step(params, opt, state, next(it),
                                    jax.random.PRNGKey(k))
    out.append(float(loss))
  return out


@pytest.mark.parametrize('method', ['entity_pool', 'entity_embeddings'])
def test_methods_train(data_files, method):
  history = fit(relation.RelationTask(tiny_config(data_files, method)),
                steps=40)
  # Means over an epoch (4 batches of 8 of the 36 examples) at start and end.
  assert np.mean(history[-4:]) < 0.5 * np.mean(history[:4]), history


@pytest.mark.parametrize('method', ['entity_markers', 'entity_pool',
                                    'entity_embeddings'])
def test_relation_heads_read_cached_encoder_outputs(data_files, method):
  # tiny_config has both encoder dropouts 0.
  frozen_check.assert_cache_replays(
      relation.RelationTask(tiny_config(data_files, method)))


def test_tiny_run_entity_markers(data_files, tmp_path):
  c = tiny_config(data_files, 'entity_markers')
  results = train.run(c, tmp_path / 'run')
  written = json.loads((tmp_path / 'run' / 'results.json').read_text())
  final = written['final_eval']
  for key in ('accuracy', 'macro_f1', 'macro_f1_excl_other',
              'semeval_macro_f1', 'eval_skipped'):
    assert key in final, key
  assert set(final['per_class']) == {l for l, _ in RELATIONS}
  assert all(f'f1/{l}' in final for l, _ in RELATIONS)
  history = [h['loss'] for h in results['train_history'] if 'loss' in h]
  assert history[-1] < 0.7 * history[0], history
  rows = [json.loads(l) for l in
          (tmp_path / 'run' / 'predictions.jsonl').read_text().splitlines()]
  assert len(rows) == 12 and set(rows[0]) == {'guid', 'label', 'prediction'}
