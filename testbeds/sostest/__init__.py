"""sostest: the sosrouter testbed as one Python package (run it as `testbeds/run ...`).

Modules:
  sip        minimal SIP message parsing and building (just what the testbed's own agents need)
  procs      processes in their own process groups, stopped by pgid (never by name)
  topology   the statewide topology: sosrouter rules and the Kamailio dispatcher list
  fakepsap   asyncio SIP UAS serving many answering points whose INVITE behaviour switches live
  caller     asyncio SIP UAC for the statewide drills: bounded calls at a fixed rate, SDP + RTP
  statewide  the statewide drills: timeline, metrics (dataclasses -> result.json), table, PNG plot
  report     reports of the SIPp commands (smoke, drill, throughput, compare, profile)
"""
