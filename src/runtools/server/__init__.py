"""`taro serve`: an HTTP API, Server-Sent Events and a web dashboard over one environment.

Needs the `serve` extra (starlette, uvicorn). Nothing here is imported by `run job` or the
read verbs of taro: `runtools.cli.taro.serve` imports this package only when the verb runs.
"""
