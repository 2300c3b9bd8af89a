"""Tables (markdown) and plots (PNG) from results; no training logic here."""


def merge_grid(validation, test, teacher_cut_test):
  """One record per grid point: validation accuracy, test accuracy, and the
  test accuracy of the same cut of the teacher before elastic training."""
  rows = []
  for val, tst, cut in zip(validation, test, teacher_cut_test):
    assert (val['depth_mult'], val['width_mult']) == (tst['depth_mult'],
                                                      tst['width_mult'])
    rows.append({'depth_mult': val['depth_mult'],
                 'width_mult': val['width_mult'],
                 'params': val['params'], 'bytes': val['bytes'],
                 'accuracy': val['accuracy'],
                 'test_accuracy': tst['accuracy'],
                 'teacher_cut_test_accuracy': cut['accuracy']})
  return rows


def markdown_table(headers, rows) -> str:
  lines = ['| ' + ' | '.join(headers) + ' |',
           '|' + '|'.join('---:' for _ in headers) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def grid_table(grid) -> str:
  return markdown_table(
      ['depth', 'width', 'params', 'val acc', 'test acc',
       'teacher cut test acc'],
      [[f"{r['depth_mult']:g}", f"{r['width_mult']:g}", f"{r['params']:,}",
        f"{r['accuracy']:.3f}", f"{r['test_accuracy']:.3f}",
        f"{r['teacher_cut_test_accuracy']:.3f}"] for r in grid])
