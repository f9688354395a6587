"""ponder.tasks.tokenizer: fixed small vocabulary, exact round trips, transformers loads it."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tokenizers")

from ponder.tasks.arithmetic import LEVELS, generate  # noqa: E402
from ponder.tasks.solutions import STYLES, solve  # noqa: E402
from ponder.tasks.task import ArithmeticTask  # noqa: E402
from ponder.tasks.tokenizer import CHARACTERS, SPECIAL_TOKENS, build_tokenizer, save  # noqa: E402

TOKENIZER = build_tokenizer()
TASK = ArithmeticTask()


def round_trips(text: str) -> bool:
    encoding = TOKENIZER.encode(text)
    return (encoding.ids[0] == 1 and len(encoding.ids) == len(text) + 1
            and TOKENIZER.decode(encoding.ids) == text)


def test_vocabulary():
    vocab = TOKENIZER.get_vocab()
    assert len(vocab) == len(SPECIAL_TOKENS) + len(CHARACTERS) < 64
    assert [vocab[t] for t in ("<pad>", "<bos>", "<eos>", "<unk>", "<step>")] == [0, 1, 2, 3, 4]
    assert all(vocab[d] == vocab["0"] + int(d) for d in "0123456789")
    assert build_tokenizer().to_str() == TOKENIZER.to_str()


@settings(deadline=None)
@given(st.sampled_from(sorted(LEVELS)), st.integers(0, 2**40), st.sampled_from(STYLES), st.integers(0, 2**32))
def test_task_text_round_trips(level, seed, style, style_seed):
    problem = generate(LEVELS[level], seed)
    text = TASK.format_prompt(problem) + TASK.format_solution(solve(problem.expression, style, style_seed))
    assert round_trips(text)


@given(st.text(alphabet=CHARACTERS))
def test_any_text_over_the_alphabet_round_trips(text):
    assert round_trips(text)


def test_specials_and_unknown_characters():
    encoding = TOKENIZER.encode("1 + 2 = 3<step>\n", add_special_tokens=False)
    assert encoding.tokens == ["1", " ", "+", " ", "2", " ", "=", " ", "3", "<step>", "\n"]
    assert TOKENIZER.decode(encoding.ids) == "1 + 2 = 3\n"
    assert TOKENIZER.decode(encoding.ids, skip_special_tokens=False) == "1 + 2 = 3<step>\n"
    assert TOKENIZER.encode("x%", add_special_tokens=False).tokens == ["<unk>", "<unk>"]


def test_saved_tokenizer_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    save(tmp_path / "tok")
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "tok"))
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2, 3)
    problem = generate(LEVELS[5], 0)
    text = TASK.format_prompt(problem) + TASK.format_solution(problem.steps)
    ids = hf(text)["input_ids"]
    assert ids == TOKENIZER.encode(text).ids
    assert hf.decode(ids, skip_special_tokens=True) == text
    assert hf.convert_tokens_to_ids("<step>") == 4
