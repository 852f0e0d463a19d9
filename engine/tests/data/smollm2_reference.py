"""Reference token ids for SmolLM2 GGUF: HF-style tokenizer (Digits + ByteLevel BPE) built from the
GGUF vocabulary with Python `tokenizers`, chat rendered with jinja2.
Usage: python smollm2_reference.py SmolLM2-135M-Instruct.Q4_1.gguf smollm2_tokens.json  (needs gguf, tokenizers, jinja2)"""
import json, sys
from gguf import GGUFReader
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, AddedToken
r = GGUFReader(sys.argv[1])
def sarr(k):
    f = r.fields[k]; return [bytes(f.parts[i]).decode() for i in f.data]
toks = sarr("tokenizer.ggml.tokens"); merges = [tuple(m.split(" ",1)) for m in sarr("tokenizer.ggml.merges")]
f = r.fields["tokenizer.ggml.token_type"]; tt = [int(f.parts[i][0]) for i in f.data]
vocab = {t:i for i,t in enumerate(toks)}
tk = Tokenizer(models.BPE(vocab, merges))
tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
tk.decoder = decoders.ByteLevel()
tk.add_special_tokens([AddedToken(t, special=True) for t,ty in zip(toks,tt) if ty==3])
tmpl = r.fields["tokenizer.chat_template"].contents()
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
chat = env.from_string(tmpl).render(messages=[{"role":"user","content":"What is the capital of France?"},{"role":"assistant","content":"Paris."},{"role":"user","content":"And of Japan? Answer in 3 words: 日本 🇯🇵"}], add_generation_prompt=True, bos_token="<|im_start|>", eos_token="<|im_end|>", tools=None)
texts = ["What is the capital of France?", "Hello world! 12345 tokens, e.g. x=3.14159; don't stop.\n\n  indented\tline", "naïve café — 日本語 🇯🇵 emojis 😀", chat]
out = {"texts": texts, "ids": [tk.encode(t).ids for t in texts], "chat": chat}
json.dump(out, open(sys.argv[2], "w"), ensure_ascii=False, indent=1)
for t, ids in zip(texts, out["ids"]): print(repr(t[:60]), ids[:40], len(ids))
