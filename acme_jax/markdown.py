"""Markdown tables, as every report and generated doc writes them."""


def markdown_table(headers, rows) -> str:
  lines = ['| ' + ' | '.join(headers) + ' |',
           '|' + '|'.join('---:' for _ in headers) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)
