"""`kdrun-report`: read run directories (never train) and turn a sweep into tables, statistics,
plots and a self-contained HTML / Markdown report.

- `collect`: find runs and build the tidy table (varying overrides + metrics as columns);
- `aggregate`: mean, std, SEM, n over seeds;
- `stats`: paired comparisons (PI, PG, Wilcoxon, paired t, Benjamini-Hochberg), kappa*;
- `plots`: matplotlib figures (PNG);
- `render`: the HTML and Markdown report;
- `cli`: the command.
"""
