"""Prepares a small TFDS text dataset of real SOTU speeches, in its own process.

  python tests/tfds_build_probe.py DATA_DIR FILE_FORMAT TEXTS.json

The builder class exists only in this process, so the test that reads the
prepared files sees what a user sees: a dataset prepared elsewhere, whose
code is not importable, found from its `dataset_info.json`.
"""

import json
import sys

import tensorflow_datasets as tfds

SPEECHES = 6


def speeches():
  from bert_jax.data import registry  # pylint: disable=g-import-not-at-top
  files = sorted(registry.fetch('sotu').glob('*.json'))[::40][:SPEECHES]
  return [json.loads(f.read_text())['text'] for f in files]


class SotuProbe(tfds.core.GeneratorBasedBuilder):
  """A few SOTU speeches, one record per speech, in a 'text' feature."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i, text in enumerate(speeches()):
      yield i, {'text': text}


if __name__ == '__main__':
  data_dir, file_format = sys.argv[1], sys.argv[2]
  SotuProbe(data_dir=data_dir, file_format=file_format).download_and_prepare()
  with open(sys.argv[3], 'w') as f:  # stdout carries progress bars
    json.dump(speeches(), f)
