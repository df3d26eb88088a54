"""Tools around the pipeline that are not stages: the `embedtune` command (DagsHub remotes) and
a local OpenAI-compatible model server."""
