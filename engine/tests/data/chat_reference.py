"""Regenerates chat_cases.json / chat_expected.json with jinja2 configured as HF transformers does.
Usage: python chat_reference.py  (needs jinja2)"""
import json, os, re, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.exceptions import TemplateError
def raise_exception(m): raise TemplateError(m)
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
d = os.path.dirname(os.path.abspath(__file__)) + "/"
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather for a city — \"quoted\" & <tagged>", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. Zürich"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "search", "description": "Search the web", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
messages = [{"role": "system", "content": "You are a careful agent."},
            {"role": "user", "content": "  What's the weather in Zürich for 2 days?  "},
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2, "ratio": 0.5, "flag": True, "none": None}}}]},
            {"role": "tool", "content": "{\"temp\": 21}"},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "It is 21 degrees and sunny."},
            {"role": "user", "content": "Thanks!"}]
cases = {"messages": messages, "tools": tools}
json.dump(cases, open(d + "chat_cases.json", "w"), ensure_ascii=False, indent=1)
t = env.from_string(open(d + "chatml_tools.jinja").read())
out = {}
out["tools_gen"] = t.render(messages=messages, tools=tools, add_generation_prompt=True, bos_token="", eos_token="<|im_end|>")
out["notools_nogen"] = t.render(messages=messages[1:2], tools=None, add_generation_prompt=False, bos_token="", eos_token="<|im_end|>")
src = open(d + "../../src/chat.rs").read()
fb = re.search(r'pub const CHATML_FALLBACK: &str = r##"(.*?)"##;', src, re.S).group(1)
f = env.from_string(fb)
out["fallback_tools_gen"] = f.render(messages=messages, tools=tools, add_generation_prompt=True)
out["fallback_plain"] = f.render(messages=messages[1:2], tools=None, add_generation_prompt=True)
out["tojson_indent"] = env.from_string("{{ x | tojson(indent=2) }}|{{ x | tojson(sort_keys=true) }}").render(x={"b": [1, 2.5, "é\n"], "a": {}, "c": []})
json.dump(out, open(d + "chat_expected.json", "w"), ensure_ascii=False, indent=1)
for k, v in out.items(): print("=====", k); print(v)
