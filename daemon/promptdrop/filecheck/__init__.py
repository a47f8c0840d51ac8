"""The ground under `spec` (prompt and defaults files) and `config` (rules files).

Every TOML file a person writes for promptdrop is checked with the same pieces, kept here so both
packages import them downward:

- `problems`: `Problem` and `SpecError`, the one error every reader raises;
- `fields`: the keys' allowed values and limits (sizes, models, 1000 characters, 14 references);
- `reading`: reading a small regular UTF-8 file without ever blocking, and parsing its TOML;
- `locate`: the line and column where a key is written;
- `wording`: what is wrong with a value, in words a designer understands (with close matches);
- `validate`: one TOML table against one model, every problem reported;
- `refform`: how a reference may be written, before any file is looked at.

Nothing here opens a file except `reading`; everything else is a pure function.
"""
