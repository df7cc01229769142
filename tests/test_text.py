"""Text front-end: normalisation, espeak phonemes, symbol tables, collater, BPE, CLI."""

import logging
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from dmtts.errors import DmttsError
from dmtts.text import SymbolTable, TextTokenCollater, build_text_frontend
from dmtts.text.tts_input_norm import normalize_english, number_to_words, ordinal_to_words, year_to_words
from dmtts.text.phonemizer import WORD_BOUNDARY, Phonemizer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3.50", "three point five zero"),
        ("It costs $3.50.", "It costs three dollars and fifty cents."),
        ("$5", "five dollars"),
        ("$1", "one dollar"),
        ("$0.99", "ninety nine cents"),
        ("$5 million", "five million dollars"),
        ("Dr. Smith", "doctor Smith"),
        ("Mr. and Mrs. Jones live on Main St. near St. Paul.", "mister and missus Jones live on Main street near saint Paul."),
        ("1990s", "nineteen nineties"),
        ("I called the Dr.", "I called the doctor."),
        ("In 1990", "In nineteen ninety"),
        ("the 80s", "the eighties"),
        ("in 1905 and 2007 and 2019", "in nineteen oh five and two thousand seven and twenty nineteen"),
        ("the 21st and 3rd", "the twenty first and third"),
        ("1,000,000 people", "one million people"),
        ("50% & more", "fifty percent and more"),
        ("at 10:30", "at ten thirty"),
        ("-5", "minus five"),
        ("Wait...  what?!!", "Wait… what?!"),
        ("“Hello” — she said", '"Hello", she said'),
    ],
)
def test_normalize(text, expected):
    assert normalize_english(text) == expected


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(1_002_003) == "one million two thousand three"
    assert ordinal_to_words(12) == "twelfth"
    assert ordinal_to_words(40) == "fortieth"
    assert year_to_words(1900) == "nineteen hundred"


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text(text):
    with pytest.raises(DmttsError, match="empty"):
        normalize_english(text)


@pytest.mark.parametrize("text", ["你好世界", "Привет, мир", "hello мир"])
def test_non_latin(text):
    with pytest.raises(DmttsError, match="Latin-script English.*bpe"):
        normalize_english(text)


def test_accented_latin_ok():
    assert normalize_english("café naïve") == "café naïve"


def test_phonemizer_real_espeak():
    p = Phonemizer("en-us")
    tokens = p("Hello, world!")
    assert tokens == ["h", "ə", "l", "ˈoʊ", ",", WORD_BOUNDARY, "w", "ˈɜː", "l", "d", "!"]
    batch = p.phonemize_batch(["Dr. Smith.", "$5"])
    assert batch[0][:4] == ["d", "ˈɑː", "k", "t"]  # "doctor"
    assert WORD_BOUNDARY in batch[1] and "z" in batch[1]  # "five dollars"
    safe = p.phonemize_batch_safe(["ok", "", "你好"])
    assert isinstance(safe[0], list) and isinstance(safe[1], DmttsError) and isinstance(safe[2], DmttsError)
    with pytest.raises(DmttsError, match="non-Latin"):
        p("Привет")
    with pytest.raises(DmttsError, match="empty"):
        p("")


def test_symbol_table_round_trip(tmp_path):
    table = SymbolTable.from_sequences([["b", "a", "_"], ["ˈoʊ", ","]])
    assert table.symbols[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (table.pad_id, table.bos_id, table.eos_id, table.unk_id) == (0, 1, 2, 3)
    path = tmp_path / "symbols.txt"
    table.to_file(path)
    assert path.read_text().splitlines()[0] == "<pad> 0"
    loaded = SymbolTable.from_file(path)
    assert loaded == table and loaded.id("ˈoʊ") == table.id("ˈoʊ")
    before = loaded.id("a")
    loaded.update(["zz", "a"])
    assert loaded.id("a") == before and loaded.id("zz") == len(table)
    (tmp_path / "bad.txt").write_text("a 0\nb 1\n")
    with pytest.raises(DmttsError, match="first ids"):
        SymbolTable.from_file(tmp_path / "bad.txt")
    with pytest.raises(DmttsError, match="whitespace"):
        table.add("a b")


def test_collater_padding_bos_eos():
    table = SymbolTable(["a", "b", "c"])
    coll = TextTokenCollater(table)
    tokens, lengths = coll([["a", "b", "c"], ["c"]])
    assert tokens.dtype == torch.long
    assert tokens.tolist() == [[1, 4, 5, 6, 2], [1, 6, 2, 0, 0]]
    assert lengths.tolist() == [5, 3]
    assert coll.decode(tokens[1]) == ["c"]
    plain = TextTokenCollater(table, add_bos=False, add_eos=False)
    assert plain([["a"]])[0].tolist() == [[4]]


def test_collater_unknown_symbols(caplog):
    table = SymbolTable(["a"])
    with caplog.at_level(logging.WARNING):
        tokens, _ = TextTokenCollater(table)([["a", "q", "x"]])
    assert tokens.tolist() == [[1, 4, 3, 3, 2]]
    assert "q x" in caplog.text
    with pytest.raises(DmttsError, match="unknown text symbols q"):
        TextTokenCollater(table, strict=True)([["a", "q"]])


def test_frontend_strict_unknown(tmp_path):
    SymbolTable(["h", "ˈaɪ"]).to_file(tmp_path / "symbols.txt")
    fe = build_text_frontend("phonemes", tmp_path, strict=True)
    assert fe.ids(["h", "ˈaɪ"]) == [4, 5]
    with pytest.raises(DmttsError, match="unknown text symbols"):
        fe.ids("Hi there.")
    lenient = build_text_frontend("phonemes", tmp_path / "symbols.txt")
    assert lenient.ids("Hi.")[:2] == [4, 5] and 3 in lenient.ids("Hi.")
    clone = pickle.loads(pickle.dumps(lenient))  # DataLoader workers
    assert clone.ids("Hi.") == lenient.ids("Hi.")


TRANSCRIPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "Peter Piper picked a peck of pickled peppers.",
    "How much wood would a woodchuck chuck?",
    "A journey of a thousand miles begins with a single step.",
    "To be or not to be, that is the question.",
]


def _make_cuts(tmp_path, texts):
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    tmp_path.mkdir(parents=True, exist_ok=True)

    recs, sups = [], []
    for i, text in enumerate(texts):
        wav = tmp_path / f"utt{i}.wav"
        sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
        rec = Recording.from_file(wav, recording_id=f"utt{i}")
        recs.append(rec)
        sups.append(SupervisionSegment(id=f"utt{i}", recording_id=f"utt{i}", start=0, duration=rec.duration, text=text, speaker="spk"))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs), supervisions=SupervisionSet.from_segments(sups))
    path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(path)
    return path


def test_bpe_train_and_round_trip(tmp_path):
    from dmtts.text.bpe import train_bpe

    out = train_bpe(TRANSCRIPTS * 3, tmp_path / "bpe", vocab_size=60)
    fe = build_text_frontend("bpe", out)
    assert fe.kind == "bpe" and fe.symbol_table.symbols[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    pieces = fe.tokenize("The quick fox.")
    assert fe.tokenizer.detokenize(pieces) == "The quick fox."
    ids = fe.ids("The quick fox.")
    assert all(i >= 4 for i in ids)
    assert [fe.symbol_table.symbol(i) for i in ids] == pieces
    tokens, lengths = fe.collater()([pieces])
    assert tokens[0, 0] == 1 and tokens[0, -1] == 2 and lengths.item() == len(pieces) + 2
    # non-Latin text is fine for the BPE front-end (unknown characters -> <unk>)
    assert fe.symbol_table.unk_id in fe.ids("你好")
    with pytest.raises(DmttsError, match="empty"):
        fe.tokenize(" ")
    with pytest.raises(DmttsError, match="lower --vocab-size"):
        train_bpe(TRANSCRIPTS, tmp_path / "bpe2", vocab_size=5000)
    with pytest.raises(DmttsError, match="unknown text front-end"):
        build_text_frontend("chars", out)


def test_cli_phonemize_end_to_end(tmp_path, capsys):
    from lhotse import CutSet

    from dmtts.cli import main

    cuts = _make_cuts(tmp_path, TRANSCRIPTS[:3] + ["", "Привет мир", "Dr. Who paid $5 in 1990."])
    out = tmp_path / "out" / "cuts_phonemes.jsonl.gz"
    assert main(["phonemize", "--cuts", str(cuts), "--out", str(out)]) == 0
    result = CutSet.from_file(out)
    ids = [c.id for c in result]
    texts = [c.supervisions[0].text for c in result]
    assert len(ids) == 4 and "" not in texts and "Привет мир" not in texts  # empty + Cyrillic skipped
    assert "2 cuts failed" in capsys.readouterr().out
    table = SymbolTable.from_file(tmp_path / "out" / "symbols.txt")
    for cut in result:
        phones = cut.supervisions[0].custom["phonemes"]
        assert phones and all(p in table for p in phones)
    # the front-end reads the precomputed phonemes, and the table is extended (not renumbered)
    fe = build_text_frontend("phonemes", tmp_path / "out")
    cut = next(iter(result))
    assert fe.cut_tokens(cut) == cut.supervisions[0].custom["phonemes"]
    n = len(table)
    # a new table covers English's phonemes, not only these transcripts' (dmtts.text.coverage):
    # 'ʒ' (measure) and the NURSE vowel are in it although no transcript here has them
    assert "ʒ" in table and "ˈɜː" in table and "<unk>" in table
    cuts2 = _make_cuts(tmp_path / "x", ["Smörgåsbord."])  # a secondary-stressed 'oːɹ': not in the coverage text
    assert main(["phonemize", "--cuts", str(cuts2), "--out", str(tmp_path / "out" / "c2.jsonl.gz")]) == 0
    table2 = SymbolTable.from_file(tmp_path / "out" / "symbols.txt")
    assert table2.symbols[:n] == table.symbols and "ˌoːɹ" in table2 and "ˌoːɹ" not in table
    # --frozen-symbols leaves the table untouched
    cuts3 = _make_cuts(tmp_path / "y", ["Quixotic jukebox vexes."])
    args = ["phonemize", "--cuts", str(cuts3), "--out", str(tmp_path / "out" / "c3.jsonl.gz"), "--frozen-symbols"]
    assert main(args) == 0
    assert SymbolTable.from_file(tmp_path / "out" / "symbols.txt") == table2


def test_cli_train_bpe_and_errors(tmp_path, capsys):
    from dmtts.cli import main

    cuts = _make_cuts(tmp_path, TRANSCRIPTS)
    assert main(["text", "train-bpe", "--cuts", str(cuts), "--vocab-size", "40", "--out", str(tmp_path / "bpe")]) == 0
    assert (tmp_path / "bpe" / "bpe.model").exists() and (tmp_path / "bpe" / "symbols.txt").exists()
    assert main(["phonemize", "--cuts", str(tmp_path / "missing.jsonl.gz"), "--out", str(tmp_path / "o.jsonl.gz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = _make_cuts(tmp_path / "b", ["你好"])
    assert main(["phonemize", "--cuts", str(bad), "--out", str(tmp_path / "o.jsonl.gz")]) == 2
    assert "no cut" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl.gz").exists()


def test_unknown_stress_variants_map_to_the_nearest_known_symbol():
    """A phone/stress combination missing from the table becomes the same phone with another
    stress (or without its length mark), not <unk>; truly unknown symbols stay as they are."""
    from dmtts.text.frontend import nearest_symbol

    table = SymbolTable(["ˈɑːɹ", "ɪ", "ˌoʊ", "e"])
    assert nearest_symbol("ɑːɹ", table) == "ˈɑːɹ"  # unstressed -> stressed
    assert nearest_symbol("ˈɪ", table) == "ɪ"  # stressed -> unstressed
    assert nearest_symbol("ˈoʊ", table) == "ˌoʊ"  # primary -> secondary
    assert nearest_symbol("eː", table) == "e"  # length mark dropped
    assert nearest_symbol("ʒ", table) == "ʒ" and nearest_symbol("ɪ", table) == "ɪ"
