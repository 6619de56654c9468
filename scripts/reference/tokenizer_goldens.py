"""Tokenizer goldens for DeepRust from the pinned Python stack (transformers' fast tokenizer).

Loads the real DeepSeek-V3 tokenizer from assets/tokenizers/deepseek-v3 (install it with scripts/fetch-tokenizer.sh)
through transformers.AutoTokenizer (-> LlamaTokenizerFast) and writes tests/golden/tokenizer/deepseek_v3.json:
  versions   transformers / tokenizers / jinja2 versions (the chat template is rendered by jinja2)
  source     sha256 of the two tokenizer files used
  special    bos/eos/pad strings + ids, add_bos_token/add_eos_token, len(tokenizer), vocab sizes, the model's
             vocab size, clean_up_tokenization_spaces, every added token (placeholders summarized as a range),
             and how BOS gets added (LlamaTokenizerFast swaps the file's ByteLevel post-processor for a template)
  encode     [{name, text, ids (add_special_tokens=False), ids_special (add_special_tokens=True), tokens}]
             hand-written hard cases + seeded random mixed-script strings
  decode     [{name, ids, skip_special, keep_special}] for every encode case's ids_special plus special tokens
             mid-sequence, ids past len(tokenizer) (unassigned rows of the model's embedding), lone byte tokens
  chat       [{name, messages, add_generation_prompt, text, ids}] or {..., error} when rendering fails
Everything is deterministic. Run: $(scripts/reference/venv.sh) scripts/reference/tokenizer_goldens.py
"""
import hashlib
import json
import random
import sys
from pathlib import Path

import jinja2
import tokenizers
import transformers
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
TOK_DIR = ROOT / "assets" / "tokenizers" / "deepseek-v3"
OUT = ROOT / "tests" / "golden" / "tokenizer" / "deepseek_v3.json"
MODEL_VOCAB = 129280  # DeepSeek-V3 config.json vocab_size (embedding rows)
RANDOM_CASES = 200
RANDOM_SEED = 20250101

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"

# ----------------------------------------------------------------------------------------------------------------
# Hand-written hard cases: (name, text)
PYTHON_SNIPPET = '''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
\tprint([fib(i) for i in range(10)])  # tab-indented on purpose
'''

RUST_SNIPPET = '''use std::collections::HashMap;

/// Counts words.
pub fn count(text: &str) -> HashMap<&str, usize> {
\tlet mut m = HashMap::new();
\tfor w in text.split_whitespace() {
\t\t*m.entry(w).or_insert(0) += 1;
\t}
\tm
}

fn main() { println!("{:?}", count("a b a")); }
'''

MARKDOWN = """# Title

Some *emphasis*, **bold**, `code`, and a [link](https://example.com).

- item one
- item two
  1. nested

> quote

| a | b |
|---|---|
| 1 | 2 |

```python
print("hi")
```
"""

JSON_TEXT = json.dumps({"name": "DeepRust", "version": [0, 1, 0], "nested": {"ok": True, "none": None,
                        "pi": 3.14159, "s": "quote \" and \\ backslash", "unicode": "héllo 世界"}}, indent=2)


def base_cases(added_tokens):
    c = [
        ("ascii_prose", "The quick brown fox jumps over the lazy dog. It wasn't me, she said; \"really?\""),
        ("ascii_prose_paragraphs", "First paragraph here.\n\nSecond paragraph, with more words: alpha, beta, gamma.\n"),
        ("code_python_tabs", PYTHON_SNIPPET),
        ("code_rust_tabs", RUST_SNIPPET),
        ("digits_1", "1"),
        ("digits_12", "12"),
        ("digits_123", "123"),
        ("digits_1234", "1234"),
        ("digits_1234567890", "1234567890"),
        ("digits_pi", "3.14159"),
        ("digits_thousands", "1,000,000"),
        ("digits_in_prose", "In 2024, 37 of 1500 users paid $9.99 (about 2.5%)."),
        ("digits_arabic_indic", "٠١٢٣٤٥٦٧٨٩ and ०१२३४५६७८९"),
        ("cjk_chinese", "深度求索是一家人工智能公司，我们的目标是探索通用人工智能。"),
        ("cjk_chinese_mixed_ascii", "DeepSeek-V3 模型有 671B 参数，其中每个 token 激活 37B。"),
        ("cjk_japanese_kanji", "東京都渋谷区"),
        ("cjk_japanese_sentence", "私は日本語を勉強しています。"),
        ("kana_hiragana", "ひらがなだけのぶんしょうです"),
        ("kana_katakana", "カタカナノテキスト、コンピューター"),
        ("kana_halfwidth_katakana", "ｺﾝﾋﾟｭｰﾀｰ ﾃｽﾄ"),
        ("cjk_rare_ext_b", "𠀀𠀁𪚥 (CJK extension B)"),
        ("hangul", "안녕하세요, 세계! 한국어 텍스트입니다."),
        ("hangul_jamo_decomposed", "\u1100\u1161\u11a8 vs \uac01"),
        ("thai", "สวัสดีครับ ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ"),
        ("devanagari", "नमस्ते दुनिया, यह हिंदी पाठ है।"),
        ("tamil", "வணக்கம் உலகம்"),
        ("bengali", "হ্যালো বিশ্ব, এটি বাংলা।"),
        ("arabic", "مرحبا بالعالم، هذا نص عربي."),
        ("hebrew", "שלום עולם, זה טקסט בעברית."),
        ("rtl_mixed_ltr", "The word سلام means peace; שלום too. 123 مرحبا abc"),
        ("rtl_with_marks", "\u202bRLE\u202c \u200fRLM \u200eLRM \u2067isolate\u2069"),
        ("cyrillic_greek", "Привет, мир! Γειά σου Κόσμε."),
        ("emoji_simple", "I love 🦀 and 🐍 😀😃😄"),
        ("emoji_zwj_family", "family: 👨\u200d👩\u200d👧\u200d👦 and 👩\u200d👩\u200d👦"),
        ("emoji_zwj_profession", "👩\u200d💻 🧑\u200d🚀 🏳\ufe0f\u200d🌈"),
        ("emoji_skin_tones", "👍🏻 👍🏼 👍🏽 👍🏾 👍🏿"),
        ("emoji_flags", "🇺🇸🇯🇵🇩🇪🇨🇳 🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"),
        ("emoji_keycaps", "1\ufe0f\u20e3 2\ufe0f\u20e3 #\ufe0f\u20e3 *\u20e3"),
        ("emoji_variation_selectors", "\u2764 \u2764\ufe0f \u263a\ufe0e \u263a\ufe0f"),
        ("whitespace_many_spaces", "a" + " " * 17 + "b"),
        ("whitespace_tabs", "a\t\tb\t\t\tc"),
        ("whitespace_mixed", "a \t \n \t\n\n  b"),
        ("whitespace_leading_trailing", "   leading and trailing   "),
        ("whitespace_only_spaces", "      "),
        ("whitespace_only_mixed", " \t\n\r\n \u3000\u00a0"),
        ("whitespace_unicode", "a\u00a0b\u2003c\u3000d\u2009e"),
        ("crlf_lines", "line one\r\nline two\r\n\r\nline four\r\n"),
        ("lone_cr", "carriage\rreturn\r\rdouble"),
        ("newlines_many", "a\n\n\n\n\nb"),
        ("fullwidth_digits_letters", "ＡＢＣ ａｂｃ １２３４５ ！？（）"),
        ("combining_acute_nfd", "cafe\u0301"),
        ("combining_acute_nfc", "caf\u00e9"),
        ("combining_nfd_nfc_pair", "e\u0301 vs \u00e9, A\u030a vs \u00c5, n\u0303 vs \u00f1"),
        ("combining_zalgo",
         "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349a\u0337\u0324l\u0336g\u0335o"),
        ("combining_lone", "\u0301\u0302 start with marks"),
        ("control_nul", "a\x00b"),
        ("control_bell", "ding\x07dong"),
        ("control_ansi_escape", "\x1b[31mred\x1b[0m normal"),
        ("control_del", "x\x7fy"),
        ("control_c0_range", "".join(chr(i) for i in range(0, 32))),
        ("control_c1", "\x80\x85\x9f"),
        ("zero_width_space", "zero\u200bwidth\u200b\u200bspace"),
        ("bom_feff", "\ufeffBOM at start and\ufeffinside"),
        ("line_paragraph_separator", "line\u2028sep\u2029para"),
        ("zwj_zwnj_alone", "a\u200db\u200cc"),
        ("private_use_and_nonchar", "\ue000\uf8ff\U000f0000 \ufffd \uffff"),
        ("empty", ""),
        ("single_space", " "),
        ("single_newline", "\n"),
        ("single_char", "a"),
        ("long_word_500", ("supercalifragilistic" * 25)[:500]),
        ("long_digits_200", "".join(str(i % 10) for i in range(200))),
        ("long_cjk_300", ("人工智能" * 75)),
        ("long_repeated_char", "a" * 300),
        ("long_repeated_space_punct", "!" * 50 + " " * 50 + "-" * 50),
        ("urls", "See https://github.com/deepseek-ai/DeepSeek-V3?tab=readme#intro and http://例え.jp/パス?q=1&r=2."),
        ("emails", "Contact: first.last+tag@example.co.uk, 用户@例子.中国"),
        ("markdown", MARKDOWN),
        ("json", JSON_TEXT),
        ("punctuation_runs", "Wait... what?!? (yes) [no] {maybe} <html> --- *** ___ ''' \"\"\" ``` ~~~"),
        ("contractions", "I'm you're he's we'll they'd can't won't Y'all O'Neil"),
        ("math_symbols", "∀x∈ℝ: x²≥0, ∑ᵢ aᵢ = π ≈ 3.14, ∫₀¹ f(x)dx ≠ ∞"),
        ("html_like", "<div class=\"x\">a &amp; b</div><br/><script>alert(1)</script>"),
    ]
    # Real added tokens embedded in text (every non-placeholder added token, plus a placeholder).
    for t in added_tokens:
        c.append((f"added_token_embedded_{t['id']}", f"before{t['content']}after {t['content']} end"))
        c.append((f"added_token_alone_{t['id']}", t["content"]))
    c += [
        ("special_bos_at_start", f"{BOS}Hello"),
        ("special_chat_like", f"{BOS}You are helpful.{USER}Hi there!{ASSISTANT}Hello!{EOS}{USER}Bye{ASSISTANT}"),
        ("special_adjacent", f"{USER}{ASSISTANT}{EOS}{EOS}{BOS}"),
        ("special_with_spaces", f" {USER} hi {ASSISTANT} "),
        ("special_tool_call_block",
         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
         "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
        ("special_placeholder", "x<｜place▁holder▁no▁0｜>y<｜place▁holder▁no▁799｜>z"),
        ("think_tags", "<think>\nLet me think step by step.\n</think>\n\nThe answer is 42."),
        ("think_tags_alone", "<think></think>"),
        ("eot_token", "done<|EOT|>"),
        # Look-alikes that must NOT become added tokens.
        ("lookalike_ascii_pipes", "<|User|>hello<|Assistant|>"),
        ("lookalike_ascii_pipes_bos", "<|begin▁of▁sentence|>"),
        ("lookalike_spaced_pipes", "<| User |>"),
        ("lookalike_trailing_space", "<｜User｜ >"),
        ("lookalike_think_space", "< think>x</ think>"),
        ("lookalike_underscore", "<｜begin_of_sentence｜>"),
        ("lookalike_plain_space", "<｜begin of sentence｜>"),
        ("lookalike_partial_open", "<｜User"),
        ("lookalike_partial_close", "User｜>"),
        ("lookalike_lowercase", "<｜user｜>"),
        ("lookalike_fullwidth_brackets", "＜｜User｜＞"),
        ("lookalike_nested", "<｜<｜User｜>｜>"),
        ("lookalike_eot_spaced", "<| EOT |> <|eot|>"),
    ]
    return c


# ----------------------------------------------------------------------------------------------------------------
# Seeded random mixed-script strings
POOLS = {
    "ascii_word": ["the", "Hello", "world", "DeepSeek", "token", "a", "I", "rust", "GPU", "x", "don't", "A.I."],
    "digits": [str(n) for n in (0, 7, 42, 123, 2024, 31415, 1000000)] + ["3.5", "1,234", "0x1F"],
    "punct": list(".,;:!?-_()[]{}<>'\"`~@#$%^&*+=/\\|") + ["...", "—", "–", "«", "»", "“", "”", "、", "。", "！", "？"],
    "space": [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "    "],
    "cjk": ["中文", "模型", "深度", "東京", "漢字", "学习", "人"],
    "kana": ["ひらがな", "カタカナ", "ｶﾀｶﾅ", "こんにちは", "テスト", "ー"],
    "hangul": ["한국어", "안녕", "세계", "ㄱㄴㄷ"],
    "thai": ["สวัสดี", "ภาษาไทย", "ครับ"],
    "indic": ["नमस्ते", "हिंदी", "தமிழ்", "বাংলা"],
    "rtl": ["مرحبا", "عربي", "שלום", "עברית"],
    "emoji": ["😀", "🦀", "👍🏽", "👨\u200d👩\u200d👧", "🇯🇵", "1\ufe0f\u20e3", "❤\ufe0f", "🏳\ufe0f\u200d🌈"],
    "combining": ["e\u0301", "a\u0308", "n\u0303", "\u0301", "o\u0336\u0337"],
    "fullwidth": ["ＡＢＣ", "１２３", "ｘ"],
    "control": ["\x00", "\x1b", "\u200b", "\ufeff", "\u2028", "\x7f"],
    "special": [BOS, EOS, USER, ASSISTANT, "<think>", "</think>", "<|User|>"],
}
POOL_WEIGHTS = {"ascii_word": 10, "digits": 5, "punct": 6, "space": 10, "cjk": 4, "kana": 3, "hangul": 2, "thai": 2,
                "indic": 2, "rtl": 2, "emoji": 3, "combining": 1, "fullwidth": 1, "control": 1, "special": 1}
CODEPOINT_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x9FF),
                    (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF01, 0xFF9F),
                    (0x1F300, 0x1FAFF), (0x2000, 0x206F), (0x0300, 0x036F)]


def random_cases():
    rng = random.Random(RANDOM_SEED)
    names, weights = list(POOL_WEIGHTS), list(POOL_WEIGHTS.values())
    out = []
    for i in range(RANDOM_CASES):
        length = rng.randint(1, 80)
        s = ""
        while len(s) < length:
            if rng.random() < 0.1:  # a random code point from one of the ranges (never a surrogate)
                lo, hi = rng.choice(CODEPOINT_RANGES)
                s += chr(rng.randint(lo, hi))
            else:
                s += rng.choice(POOLS[rng.choices(names, weights)[0]])
        out.append((f"random_{i:03d}", s[:length]))
    return out


# ----------------------------------------------------------------------------------------------------------------
def tool_call(name, args):
    return {"type": "function", "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


def chat_cases():
    sys_msg = {"role": "system", "content": "You are a helpful assistant."}
    weather_call = {"role": "assistant", "content": None, "tool_calls": [tool_call("get_weather", {"city": "Paris"})]}
    two_calls = {"role": "assistant", "content": None, "tool_calls": [
        tool_call("get_weather", {"city": "Paris"}), tool_call("get_time", {"tz": "Europe/Paris"})]}
    three_calls = {"role": "assistant", "content": None, "tool_calls": [
        tool_call("a", {"x": 1}), tool_call("b", {"y": [1, 2]}), tool_call("c", {})]}
    cases = [
        ("user_only", [{"role": "user", "content": "Hello!"}]),
        ("system_user", [sys_msg, {"role": "user", "content": "What is 2+2?"}]),
        ("several_system", [
            {"role": "system", "content": "Rule one."},
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "Rule two (after a user turn)."},
            {"role": "system", "content": "Rule three."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
        ]),
        ("multi_turn", [
            sys_msg,
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "7"},
            {"role": "user", "content": "Another one?"},
            {"role": "assistant", "content": "11"},
            {"role": "user", "content": "Sum them."},
        ]),
        ("ends_with_assistant", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]),
        ("empty_contents", [
            {"role": "system", "content": ""},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": ""},
        ]),
        ("tool_call_single_then_result", [
            sys_msg,
            {"role": "user", "content": "Weather in Paris?"},
            weather_call,
            {"role": "tool", "content": "{\"temp_c\": 18, \"sky\": \"cloudy\"}"},
        ]),
        ("tool_call_single_then_result_then_answer", [
            {"role": "user", "content": "Weather in Paris?"},
            weather_call,
            {"role": "tool", "content": "18C, cloudy"},
            {"role": "assistant", "content": "It is 18°C and cloudy in Paris."},
            {"role": "user", "content": "Thanks!"},
        ]),
        ("tool_calls_two_then_two_results", [
            {"role": "user", "content": "Weather and time in Paris?"},
            two_calls,
            {"role": "tool", "content": "18C, cloudy"},
            {"role": "tool", "content": "14:05"},
        ]),
        ("tool_calls_three_then_three_results_then_answer", [
            {"role": "user", "content": "Run a, b, c."},
            three_calls,
            {"role": "tool", "content": "ra"},
            {"role": "tool", "content": "rb"},
            {"role": "tool", "content": "rc"},
            {"role": "assistant", "content": "All done."},
        ]),
        ("tool_calls_two_rounds", [
            {"role": "user", "content": "Weather in Paris?"},
            weather_call,
            {"role": "tool", "content": "18C"},
            {"role": "assistant", "content": "18C. Anything else?"},
            {"role": "user", "content": "And the time?"},
            {"role": "assistant", "content": None, "tool_calls": [tool_call("get_time", {"tz": "Europe/Paris"})]},
            {"role": "tool", "content": "14:05"},
        ]),
        ("tool_call_unicode_args", [
            {"role": "user", "content": "東京の天気は？"},
            {"role": "assistant", "content": None, "tool_calls": [tool_call("天気", {"都市": "東京", "emoji": "☀️"})]},
            {"role": "tool", "content": "晴れ 25°C"},
        ]),
        # transformers-style dict arguments: the template concatenates strings, so this is expected to fail.
        ("tool_call_dict_arguments", [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "18C"},
        ]),
        ("assistant_content_none_without_tool_calls", [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "Hello?"},
        ]),
        ("r1_think_prior_turn", [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "<think>\nTwo plus two is four.\n</think>\n\n4"},
            {"role": "user", "content": "And 3+3?"},
        ]),
        ("r1_think_last_turn", [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "<think>\nsimple\n</think>\n\n4"},
        ]),
        ("unicode_content", [
            {"role": "system", "content": "Réponds en français. 用中文也可以。"},
            {"role": "user", "content": "こんにちは 👋🏽 — ¿qué tal? مرحبا"},
            {"role": "assistant", "content": "Bonjour ! 😀\n\n- 一\n- 二"},
            {"role": "user", "content": "Zalgo: Z\u0351\u036ba\u0337l\u0336g\u0335o\u0301, tabs\tand\r\nCRLF"},
        ]),
        ("special_tokens_in_content", [
            {"role": "user", "content": f"Say {EOS} and {USER} literally"},
        ]),
        ("no_messages", []),
        ("system_only", [sys_msg]),
    ]
    out = []
    for name, messages in cases:
        for agp in (False, True):
            out.append((f"{name}{'_gen' if agp else ''}", messages, agp))
    return out


# ----------------------------------------------------------------------------------------------------------------
def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    if not (TOK_DIR / "tokenizer.json").exists():
        sys.exit(f"{TOK_DIR}/tokenizer.json missing: run scripts/fetch-tokenizer.sh")
    transformers.logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(str(TOK_DIR))
    assert tok.is_fast, type(tok)
    raw = json.loads((TOK_DIR / "tokenizer.json").read_text())
    live = json.loads(tok.backend_tokenizer.to_str())

    added = [{"id": i, "content": t.content, "special": t.special, "normalized": t.normalized,
              "lstrip": t.lstrip, "rstrip": t.rstrip, "single_word": t.single_word}
             for i, t in sorted(tok.added_tokens_decoder.items())]
    placeholders = [a for a in added if a["content"].startswith("<｜place▁holder▁no▁")]
    assert all(a["content"] == f"<｜place▁holder▁no▁{a['id'] - placeholders[0]['id']}｜>" and a["special"]
               and not a["normalized"] for a in placeholders)
    named_added = [a for a in added if a not in placeholders]
    size = len(tok)
    gap = list(range(size, MODEL_VOCAB))

    special = {
        "tokenizer_class": type(tok).__name__,
        "bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
        "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
        "unk_token": tok.unk_token,
        "add_bos_token": tok.add_bos_token, "add_eos_token": tok.add_eos_token,
        "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces,
        "len_tokenizer": size,
        "vocab_size_attr": tok.vocab_size,  # transformers' tok.vocab_size (BPE vocab, no added tokens)
        "tokenizers_vocab_size_with_added": tok.backend_tokenizer.get_vocab_size(with_added_tokens=True),
        "tokenizers_vocab_size_base": tok.backend_tokenizer.get_vocab_size(with_added_tokens=False),
        "model_vocab_size": MODEL_VOCAB,
        "unassigned_ids": {"first": gap[0], "last": gap[-1], "count": len(gap)} if gap else None,
        "all_special_tokens": tok.all_special_tokens, "all_special_ids": tok.all_special_ids,
        "file_post_processor": raw["post_processor"]["type"],
        "live_post_processor": live["post_processor"],
        "post_processor_note": ("tokenizer.json's post_processor is ByteLevel (adds nothing); LlamaTokenizerFast "
                                "replaces it at load time with a TemplateProcessing that prepends BOS "
                                "(add_bos_token=true, add_eos_token=false). The bare `tokenizers` library "
                                "loading tokenizer.json does NOT add BOS."),
        "added_tokens": named_added,
        "placeholder_tokens": {"first_id": placeholders[0]["id"], "last_id": placeholders[-1]["id"],
                               "count": len(placeholders), "pattern": "<｜place▁holder▁no▁{id-first_id}｜>",
                               "special": True, "normalized": False},
        "think_tokens_present": "<think>" in tok.get_vocab(),
    }

    # encode
    cases = base_cases(named_added + [placeholders[0]]) + random_cases()
    assert len({n for n, _ in cases}) == len(cases), "duplicate case names"
    encode = []
    for name, text in cases:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids_special = tok(text, add_special_tokens=True)["input_ids"]
        encode.append({"name": name, "text": text, "ids": ids, "ids_special": ids_special,
                       "tokens": tok.convert_ids_to_tokens(ids)})

    # decode
    def dec(name, ids):
        return {"name": name, "ids": ids, "skip_special": tok.decode(ids, skip_special_tokens=True),
                "keep_special": tok.decode(ids, skip_special_tokens=False)}

    hello = tok("Hello world", add_special_tokens=False)["input_ids"]
    decode = [dec(f"encode:{e['name']}", e["ids_special"]) for e in encode]
    decode += [
        dec("special_mid_sequence", [0] + hello + [1] + hello + [128803] + hello + [128804, 1, 0] + hello),
        dec("all_named_added_tokens", [a["id"] for a in named_added]),
        dec("placeholders_mid_sequence", hello + [128000, 128001, 128799] + hello),
        dec("pad_and_eot_mid_sequence", hello + [2, 128805] + hello + [2]),
        dec("tool_tokens_mid_sequence", [128806, 128808] + hello + [128814] + hello + [128809, 128807]),
        dec("empty", []),
    ]
    if gap:
        decode += [
            dec("unassigned_ids_only", [gap[0], gap[len(gap) // 2], gap[-1]]),
            dec("unassigned_ids_mid_sequence", hello + [gap[0]] + hello + [gap[-1], 1]),
        ]
    for text in ("😀", "é", "中", "👨\u200d👩\u200d👧"):  # byte-level pieces of one char: partial UTF-8
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for k, i in enumerate(ids):
            decode.append(dec(f"single_piece_{k}_of_{text}", [i]))
        if len(ids) > 1:
            decode.append(dec(f"prefix_pieces_of_{text}", ids[:-1]))

    # chat
    chat = []
    for name, messages, agp in chat_cases():
        entry = {"name": name, "messages": messages, "add_generation_prompt": agp}
        try:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
            ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=agp)
            entry.update(text=text, ids=list(ids))
            entry["ids_equal_encode_no_special"] = list(ids) == tok(text, add_special_tokens=False)["input_ids"]
        except Exception as e:  # record, don't drop
            entry["error"] = f"{type(e).__name__}: {e}"
        chat.append(entry)

    out = {
        "generator": "scripts/reference/tokenizer_goldens.py",
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "jinja2": jinja2.__version__},
        "source": {"dir": "assets/tokenizers/deepseek-v3",
                   "tokenizer.json": sha256(TOK_DIR / "tokenizer.json"),
                   "tokenizer_config.json": sha256(TOK_DIR / "tokenizer_config.json")},
        "special": special,
        "encode": encode,
        "decode": decode,
        "chat": chat,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    n_err = sum("error" in c for c in chat)
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size} bytes, {len(encode)} encode, {len(decode)} decode, "
          f"{len(chat)} chat ({n_err} failed to render)")


if __name__ == "__main__":
    main()
