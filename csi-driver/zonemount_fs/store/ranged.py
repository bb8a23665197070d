"""Listing a directory again in ranges fetched at once, split at its previous listing's keys.

Why: every readdir lists the directory in S3 again (R-DIR-READDIR-RELISTS), and one listing
of N keys is N/1000 pages fetched one after the other (each needs the previous page's
continuation token); the server's time per page is the larger half of a warm ``ls -l`` of
10,000 files. A directory this mount listed before is split at every ~1000th key of that
listing (:func:`split_keys`); each range is listed from ``StartAfter`` = its first split
key, all ranges at once (:func:`list_ranges`), and the pages are stitched together.

Exactness - the result equals one sequential listing of the directory (as sets of objects
and common prefixes; objects in key order, prefixes sorted), whatever changed since the
previous listing (keys added, removed or changed anywhere, split keys included):

* a range ``(lo, hi]`` is read from ``StartAfter=lo`` until a page reaches ``hi`` or the
  listing ends; a page that ends before ``hi`` and is truncated (keys were added in the
  range) continues with its continuation token;
* each range keeps only what lies in it: objects ``lo < key <= hi``; a common prefix ``P/``
  when ``P/ > lo`` and ``P <= hi``. Common prefixes at a boundary may so come from both
  neighbours and are de-duplicated. That rule serves both orders servers list in: S3 places
  a common prefix by its key (``c-x`` < ``c/``, ``StartAfter=c`` lists ``c/`` again);
  SeaweedFS places a directory by its name (``c/`` < ``c-x``, ``StartAfter=c`` skips
  ``c/``). For the same reason a page "reaches" ``hi`` only with an object at or after it or
  a common prefix ``P/`` with ``P >= hi`` (both orders agree on those);
* split keys are object keys only (no common prefix straddles an object key in key order),
  strictly increasing, under the listed prefix.

Directory buckets list unordered (and have no ``StartAfter``): the caller lists them
sequentially. Concurrent changes during a listing are seen as by a sequential listing: each
page is a moment of its own.

Requests: a directory that did not change costs exactly the pages a sequential listing
costs (the ranges are even and at most one page each); a range that grew past a page costs
one more page per 1000 added keys in it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from .base import ListPage, ObjectInfo

#: ``fetch(start_after, token)``: one page of the directory's listing.
Fetch = Callable[[str | None, str | None], Awaitable[ListPage]]


def split_keys(page: ListPage, page_keys: int) -> tuple[str, ...]:
    """Where to split the next listing of the directory ``page`` lists in full: object keys
    cutting its entries (objects and common prefixes, in key order) into even ranges of at
    most ``page_keys`` (a common prefix at a cut moves it to the nearest object key)."""
    objects = {info.key for info in page.objects}
    entries = sorted([*objects, *page.prefixes])
    ranges = -(-len(entries) // page_keys)
    splits: list[str] = []
    low = 0  # the first index a split may take (after the previous one)
    for j in range(1, ranges):
        target = (j * len(entries) + ranges // 2) // ranges - 1  # last entry of range j-1
        found = _nearest_object(entries, objects, target, low)
        if found is not None:
            splits.append(entries[found])
            low = found + 1
    return tuple(splits)


def _nearest_object(entries: list[str], objects: set[str], target: int, low: int) -> int | None:
    for distance in range(len(entries)):
        for index in (target - distance, target + distance):
            if low <= index < len(entries) - 1 and entries[index] in objects:
                return index
        if target - distance < low and target + distance >= len(entries) - 1:
            return None
    return None


async def list_ranges(
    fetch: Fetch, splits: Sequence[str], delimiter: str = "/", parallel: int = 0
) -> ListPage:
    """List the directory in ``len(splits) + 1`` ranges at once (at most ``parallel`` at a
    time if given) and stitch them (see the module docstring); the first error of any page
    is raised (the others are cancelled)."""
    limiter = trio.CapacityLimiter(parallel or len(splits) + 1)
    bounds = list(zip([None, *splits], [*splits, None], strict=True))
    results: list[tuple[list[ObjectInfo], list[str]]] = [([], [])] * len(bounds)
    errors: list[Exception] = []

    async def one(index: int, lo: str | None, hi: str | None, cancel: trio.CancelScope) -> None:
        try:
            async with limiter:
                page = await fetch(lo, None)
                pages = [page]
                while page.next_token is not None and (hi is None or not _reaches(page, hi)):
                    page = await fetch(None, page.next_token)
                    pages.append(page)
        except Exception as exc:  # re-raised below, once the siblings stopped
            errors.append(exc)
            cancel.cancel()
            return
        results[index] = _cut(pages, lo, hi, len(delimiter))

    async with trio.open_nursery() as nursery:
        for index, (lo, hi) in enumerate(bounds):
            nursery.start_soon(one, index, lo, hi, nursery.cancel_scope)
    if errors:
        raise errors[0]
    objects = [info for range_objects, _ in results for info in range_objects]
    prefixes = sorted({p for _, range_prefixes in results for p in range_prefixes})
    return ListPage(objects, prefixes, None)


def _reaches(page: ListPage, hi: str) -> bool:
    """Has the page reached ``hi`` (in both orders servers list in)?"""
    if page.objects and max(info.key for info in page.objects) >= hi:
        return True
    return any(p[:-1] >= hi for p in page.prefixes)


def _cut(
    pages: list[ListPage], lo: str | None, hi: str | None, delimiter_len: int
) -> tuple[list[ObjectInfo], list[str]]:
    objects = [
        info
        for page in pages
        for info in page.objects
        if (lo is None or info.key > lo) and (hi is None or info.key <= hi)
    ]
    prefixes = [
        p
        for page in pages
        for p in page.prefixes
        if (lo is None or p > lo) and (hi is None or p[:-delimiter_len] <= hi)
    ]
    return objects, prefixes
