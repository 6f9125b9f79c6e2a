// "Copy as curl" and "Copy as Python (openai client)": the request the page sent, asked for as one
// whole (non-streamed) response, so the output is readable JSON with the same tokens and scores.
// The key is never pasted into a snippet: it is read from $MLX_INTERP_API_KEY when the page has one.

const OPENAI_FIELDS = new Set(["model", "messages", "max_tokens", "temperature", "seed", "n", "top_p", "stop"]);

function shellQuote(text) {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

export function curlSnippet(origin, body, withKey) {
  const lines = [`curl ${origin}/v1/chat/completions`, `  -H 'Content-Type: application/json'`];
  if (withKey) lines.push(`  -H "Authorization: Bearer $MLX_INTERP_API_KEY"`);
  lines.push(`  -d ${shellQuote(JSON.stringify(body, null, 2))}`);
  return lines.join(" \\\n");
}

// JSON -> a Python literal (True/False/None; JSON string escapes are valid Python escapes).
export function pyLiteral(value, indent = 0) {
  const pad = " ".repeat(indent + 4);
  const end = " ".repeat(indent);
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== "object")) return `[${value.map((v) => pyLiteral(v)).join(", ")}]`;
    return `[\n${value.map((v) => pad + pyLiteral(v, indent + 4)).join(",\n")},\n${end}]`;
  }
  const items = Object.entries(value);
  if (!items.length) return "{}";
  return `{\n${items.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pyLiteral(v, indent + 4)}`).join(",\n")},\n${end}}`;
}

export function pythonSnippet(origin, body, withKey) {
  const args = [];
  const extra = {};
  for (const [k, v] of Object.entries(body)) {
    if (OPENAI_FIELDS.has(k)) args.push(`    ${k}=${pyLiteral(v, 4)},`);
    else extra[k] = v;
  }
  if (Object.keys(extra).length) args.push(`    extra_body=${pyLiteral(extra, 4)},`);
  const key = withKey ? `os.environ["MLX_INTERP_API_KEY"]` : `"unused-on-loopback"`;
  return [
    "import os",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${origin}/v1", api_key=${key})`,
    "r = client.chat.completions.create(",
    ...args,
    ")",
    "for choice in r.choices:",
    "    print(choice.index, repr(choice.message.content))",
    "    print((choice.model_extra or {}).get(\"probes\"))",
    "print(r.model_extra.get(\"steering\"))",
    "",
  ].join("\n");
}
