"""Task registry: `config.task` names a Task class."""

import importlib

# name -> 'module:Class', imported on use so a task's dependencies load only
# when that task runs.
_TASKS = {
    'pretrain': 'bert_jax.tasks.pretraining:PretrainingTask',
    'classification': 'bert_jax.tasks.classification:ClassificationTask',
    'span_qa': 'bert_jax.tasks.span_qa:SpanQATask',
    'tagging': 'bert_jax.tasks.tagging:TaggingTask',
    'relation': 'bert_jax.tasks.relation:RelationTask',
    'multilabel': 'bert_jax.tasks.multilabel:MultiLabelTask',
}


def get(name: str):
  if name not in _TASKS:
    raise ValueError(f'config.task={name!r} is not a task; known: {sorted(_TASKS)}')
  module, cls = _TASKS[name].split(':')
  return getattr(importlib.import_module(module), cls)


def names() -> list[str]:
  return sorted(_TASKS)
