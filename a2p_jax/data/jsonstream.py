"""Streaming reads of huge JSON files with the standard library only.

InterHand2.6M's train annotations are several GB of JSON: `json.load` would
hold all of it, as Python objects, at once. `iter_members` walks the
top-level object of a file and decodes one member (or one array element) at
a time with the C-accelerated `json` scanner, so memory is bounded by the
largest single value (one capture of joint_3d.json, one image record of
data.json), not by the file.
"""

import json
import re
from typing import Callable, Iterable, Iterator, Optional, Tuple

_CHUNK_CHARS = 1 << 24
# A decode error this far before the end of the buffer cannot be caused by
# the buffer ending early (strings in these files are short), so it is real.
_ERROR_MARGIN = 1 << 20
_WS = re.compile(r'[ \t\n\r]*')


class JsonStreamError(ValueError):
  """Invalid JSON or an unexpected structure; names the file and position."""


class _Reader:
  """A sliding text buffer over a file with position-aware decoding."""

  def __init__(self, fh, path, chunk_chars, on_progress):
    self.fh, self.path, self.chunk = fh, path, chunk_chars
    self.buf, self.pos, self.base, self.eof = '', 0, 0, False
    self.decoder = json.JSONDecoder()
    self.on_progress = on_progress

  def error(self, msg, pos=None):
    at = self.base + (self.pos if pos is None else pos)
    return JsonStreamError(f'{self.path}: {msg} (at character {at})')

  def fill(self, want=0):
    """Reads at least max(want, chunk) more characters unless at EOF."""
    if self.eof:
      return False
    text = self.fh.read(max(want, self.chunk))
    if not text:
      self.eof = True
      return False
    # Drop the consumed prefix so the buffer holds only what is still needed
    # (only when reading: callers keep positions across a failed fill).
    self.base += self.pos
    self.buf, self.pos = self.buf[self.pos:] + text, 0
    if self.on_progress is not None:
      self.on_progress(len(text))
    return True

  def peek(self) -> str:
    """The next non-space character ('' at EOF), not consumed."""
    while True:
      self.pos = _WS.match(self.buf, self.pos).end()
      if self.pos < len(self.buf):
        return self.buf[self.pos]
      if not self.fill():
        return ''

  def expect(self, chars: str, what: str) -> str:
    c = self.peek()
    if c == '' or c not in chars:
      found = 'end of file' if c == '' else repr(c)
      raise self.error(f'expected {what}, found {found}')
    self.pos += 1
    return c

  def value(self):
    """Decodes the next complete JSON value, reading more text as needed."""
    self.peek()
    while True:
      try:
        obj, end = self.decoder.raw_decode(self.buf, self.pos)
      except json.JSONDecodeError as e:
        if self.eof or e.pos < len(self.buf) - _ERROR_MARGIN:
          raise self.error(f'invalid JSON: {e.msg}', e.pos) from None
        # Doubling the read keeps re-decoding a long value linear overall.
        self.fill(len(self.buf) - self.pos)
        continue
      # A value cut by the buffer end may decode as a shorter one: a number
      # ('-1.25e-30' read as '-1'); containers, strings and literals cannot.
      near_end = end == len(self.buf) or (
          isinstance(obj, (int, float)) and len(self.buf) - end < 64)
      if near_end and not self.eof and self.fill(len(self.buf) - self.pos):
        continue
      self.pos = end
      return obj


def iter_members(path: str, *, expand: Iterable[str] = (),
                 chunk_chars: int = _CHUNK_CHARS,
                 on_progress: Optional[Callable[[int], None]] = None
                 ) -> Iterator[Tuple[str, object]]:
  """Yields (key, value) for each member of the file's top-level object.

  For keys in `expand` (whose values must be arrays) yields (key, element)
  for each array element instead, so a huge array is never whole in memory.
  on_progress(n) is called with the number of characters read (for tqdm).
  Raises JsonStreamError naming the file for invalid JSON or structure.
  """
  expand = frozenset(expand)
  with open(path, 'r', encoding='utf-8') as fh:
    r = _Reader(fh, path, chunk_chars, on_progress)
    r.expect('{', "'{' (the file must hold a JSON object)")
    if r.peek() == '}':
      r.pos += 1
    else:
      while True:
        key = r.value()
        if not isinstance(key, str):
          raise r.error(f'expected an object key, found {key!r}')
        r.expect(':', "':'")
        if key in expand:
          yield from _iter_array(r, key)
        else:
          yield key, r.value()
        if r.expect(',}', "',' or '}'") == '}':
          break
    if r.peek() != '':
      raise r.error('unexpected data after the top-level object')


def iter_elements(path: str, *, chunk_chars: int = _CHUNK_CHARS,
                  on_progress: Optional[Callable[[int], None]] = None) -> Iterator[object]:
  """Yields each element of the file's top-level array (FreiHAND's files),
  one at a time. Raises JsonStreamError naming the file for invalid JSON, a
  top level that is not an array, or data after it."""
  with open(path, 'r', encoding='utf-8') as fh:
    r = _Reader(fh, path, chunk_chars, on_progress)
    if r.peek() != '[':
      raise r.error('expected a JSON array at the top level')
    for _, value in _iter_array(r, 'the top-level array'):
      yield value
    if r.peek() != '':
      raise r.error('unexpected data after the top-level array')


def _iter_array(r: _Reader, key: str):
  r.expect('[', f'an array under key {key!r}')
  if r.peek() == ']':
    r.pos += 1
    return
  while True:
    yield key, r.value()
    if r.expect(',]', f"',' or ']' in the array under key {key!r}") == ']':
      return
