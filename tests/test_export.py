"""`bert_jax.export` against transformers, and fill-mask against HF PyTorch.

Exported fine-tuned runs load in transformers' Auto classes and give the
logits bert_jax gives on real inputs (within 1e-4); heads HF has no class
for are refused by name. Fill-mask's top-1 equals HF `BertForMaskedLM`'s on
the same weights (MiniLM's encoder with a random MLM head, since MiniLM
ships none).
"""

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from bert_jax import export  # pylint: disable=g-import-not-at-top
from bert_jax import heads
from bert_jax import predict
from bert_jax import runs
from bert_jax import tasks
from bert_jax import train
from bert_jax.data import registry
from bert_jax.model import BertConfig

from test_predict import cls_run, files, tag_run, tiny  # pylint: disable=g-bad-import-order,unused-import


def _ours_and_hf(workdir, out, auto_cls):
  """bert_jax logits and HF logits of the run's first eval batch."""
  export.export(workdir, out)
  config = runs.load_run_config(workdir)
  task = tasks.get(config.task)(config)
  batch = next(iter(task.eval_batches(8, 0, 1)))
  params, _ = runs.restore_params(workdir, config, task, batch)
  ours = task._logits(params, batch, deterministic=True)  # pylint: disable=protected-access
  model = auto_cls.from_pretrained(out).eval()
  with torch.no_grad():
    hf = model(input_ids=torch.tensor(np.asarray(batch['input_ids'],
                                                 np.int64)),
               token_type_ids=torch.tensor(np.asarray(batch['token_type_ids'],
                                                      np.int64)),
               attention_mask=torch.tensor(np.asarray(batch['attention_mask'],
                                                      np.int64)))
  return task, batch, ours, hf, model


def test_classification_export_loads_with_equal_logits(cls_run, tmp_path):
  w, _ = cls_run
  task, _, ours, hf, model = _ours_and_hf(
      w, tmp_path, transformers.AutoModelForSequenceClassification)
  np.testing.assert_allclose(hf.logits.numpy(), np.asarray(ours), atol=1e-4)
  assert model.config.id2label == {0: 'negative', 1: 'neutral', 2: 'positive'}
  assert model.config.label2id['positive'] == 2
  # The tokenizer files load too, and tokenize as bert_jax does.
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
  text = task.eval_ds.examples[0].text
  assert tok(text)['input_ids'][:20] == task.tokenizer.encode(text).ids[:20]


def test_tagging_export_loads_with_equal_logits(tag_run, tmp_path):
  w, _ = tag_run
  task, batch, ours, hf, model = _ours_and_hf(
      w, tmp_path, transformers.AutoModelForTokenClassification)
  real = np.asarray(batch['attention_mask'], bool)
  np.testing.assert_allclose(hf.logits.numpy()[real], np.asarray(ours)[real],
                             atol=1e-4)
  assert [model.config.id2label[i] for i in range(len(task.tag_names))] == (
      task.tag_names)


def test_span_qa_export_loads_with_equal_logits(tmp_path):
  w = tmp_path / 'qa'
  train.run(tiny('disfl_qa', **{'data.max_train_examples': 32,
                                'data.max_eval_examples': 8,
                                'data.max_seq_length': 128,
                                'total_steps': 2}), w)
  _, batch, (start, end), hf, _ = _ours_and_hf(
      w, tmp_path / 'hf', transformers.AutoModelForQuestionAnswering)
  # bert_jax masks non-passage positions; HF leaves that to the caller.
  keep = np.asarray(batch['logit_mask'], bool)
  np.testing.assert_allclose(hf.start_logits.numpy()[keep],
                             np.asarray(start)[keep], atol=1e-4)
  np.testing.assert_allclose(hf.end_logits.numpy()[keep],
                             np.asarray(end)[keep], atol=1e-4)


def test_heads_without_hf_counterpart_are_refused_by_name():
  bert = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=16)
  rel = heads.BertForRelation(bert, num_labels=3, method='entity_markers')
  with pytest.raises(export.UnsupportedHead,
                     match="BertForRelation.*entity_markers.*encoder"):
    export.hf_head(rel, {'bert': {}, 'relation': {}})
  mean = heads.BertForSequenceClassification(bert, 3, pooling='mean')
  with pytest.raises(export.UnsupportedHead,
                     match="pooling='mean'.*--config.pooling=pooler"):
    export.hf_head(mean, {'bert': {}, 'classifier': {}})
  tagger = heads.BertForTokenClassification(bert, 5)
  with pytest.raises(export.UnsupportedHead,
                     match=r"BertForTokenClassification.*\['crf'\].*CRF"):
    export.hf_head(tagger, {'bert': {}, 'tagger': {}, 'crf': {}})
  assert export.hf_head(tagger, {'bert': {}, 'tagger': {}})[0] == (
      'BertForTokenClassification')


@pytest.fixture(scope='module')
def mlm_dir(tmp_path_factory):
  """MiniLM's encoder with a random MLM head, as HF BertForMaskedLM."""
  minilm = registry.fetch('minilm')
  torch.manual_seed(0)
  model = transformers.BertForMaskedLM.from_pretrained(minilm).eval()
  # from_pretrained draws the absent head with std 0.02: make it matter.
  with torch.no_grad():
    head = model.cls.predictions
    head.transform.dense.weight.normal_(0, 0.1)
    head.transform.LayerNorm.weight.uniform_(0.5, 1.5)
    head.bias.normal_(0, 1.0)
  out = tmp_path_factory.mktemp('mlm')
  model.save_pretrained(out)
  transformers.BertTokenizer.from_pretrained(minilm).save_pretrained(out)
  return out, model


def test_fill_mask_top1_equals_hf_bert_for_masked_lm(mlm_dir):
  out, model = mlm_dir
  texts = ['the capital of france is [MASK] .',
           'she took her [MASK] to the vet because it was [MASK] .',
           'reviews said the drug gave me a [MASK] headache']
  rows = predict.FillMask(out)(texts, top_k=3)
  tok = transformers.BertTokenizer.from_pretrained(out)
  for text, row in zip(texts, rows):
    x = tok(text, return_tensors='pt')
    with torch.no_grad():
      logits = model(**x).logits[0]
    where = (x['input_ids'][0] == tok.mask_token_id).nonzero()[:, 0]
    assert len(row['masks']) == len(where)
    for mask, pos in zip(row['masks'], where):
      probs = torch.softmax(logits[pos], -1)
      top = int(torch.argmax(probs))
      assert mask[0]['token'] == tok.convert_ids_to_tokens(top)
      assert mask[0]['prob'] == pytest.approx(float(probs[top]), abs=1e-4)
      assert mask[0]['prob'] >= mask[1]['prob'] >= mask[2]['prob']


def test_fill_mask_refuses_an_encoder_without_mlm_head():
  with pytest.raises(ValueError, match='no MLM head'):
    predict.FillMask(registry.fetch('minilm'))
