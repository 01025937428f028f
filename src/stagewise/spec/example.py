"""The commented spec that `stagewise init` writes: a canary of the bundled sample service.

It is the first spec most users read, so every field carries a comment saying
what it does and what else it could be. The test suite loads it, so it cannot
drift from what the models accept.
"""

from __future__ import annotations

EXAMPLE_SPEC = """\
# A stagewise Service spec. Check it with `stagewise validate stagewise.yaml`,
# deliver it with `stagewise apply stagewise.yaml`.
#
# This one runs the sample service bundled with stagewise. Apply it once to
# start v1; then change both "v1"s below to "v2" (or add "--fail-rate", "0.2"
# to the command to see a rollback) and apply again: that starts a canary.

apiVersion: stagewise.dev/v1alpha1   # the spec format's version; only this one exists so far
kind: Service                        # what this document describes; always Service

metadata:                            # who this is
  name: sample                       # the service's name: lower-case letters, digits, '-'
  labels: {team: demo}               # free-form text labels, shown by `stagewise status`

spec:                                # what to run and how to deliver it
  listen: 127.0.0.1:8080             # the address users call: the router's frontend, host:port

  router:                           # the data plane between users and instances
    kind: builtin                    # who splits the traffic: builtin (needs nothing), haproxy or nginx

  platform:                         # where instances run
    kind: local                      # who runs instances: local processes here, or ssh to `hosts`

  replicas: 2                        # instances of each release (1 to 1000)

  release:                           # the version to deliver; changing it starts a delivery
    version: v1                      # the release's name: v2, 2024.06.1, a git sha...
    run:                             # how to start one instance
      # argv of one instance, never a shell; "{port}" becomes the instance's port.
      command: ["python3", "-m", "stagewise.examples.sample_service", "--port", "{port}", "--version", "v1"]
      env: {PYTHONUNBUFFERED: "1"}   # extra environment; "{port}" is replaced here too
    readiness:                       # how to tell an instance is ready for traffic
      http: /healthz                 # ready once GET on this path answers 2xx or 3xx
      timeout: 30s                   # an instance not ready by then has failed

  strategy:                          # exactly one of: full, phased, canary, blueGreen
    canary:                          # move a growing share of requests, checking as it goes
      steps:                         # run in order; `stagewise promote` skips the rest
        - setWeight: 10              # send 10% of requests to the candidate
        - analysis:                  # compare candidate with stable, serving at the same time
            templates: [errors, latency]   # names from `analysis:` at the bottom
            duration: 1m             # how long it must look healthy before moving on
        - setWeight: 50
        - pause: {duration: 30s}     # wait; `pause: {}` waits for `stagewise promote`
        - setWeight: 100
      analysis:                      # background analysis: runs from a step until promotion
        templates: [errors]
        startingStep: 1              # index of the first step it covers (0 is the first)

  analysis:                          # templates referred to by name above
    errors:                          # a template's name, used in `templates:` above
      provider: router               # where numbers come from: router, prometheus, http or command
      metric: error-rate             # error-rate or latency
      judge: sequential              # sequential (look any time), threshold or mannwhitney
      alpha: 0.05                    # the false-alarm rate the judge keeps, however often it looks
      minRequests: 50                # requests each release needs before the analysis can pass
      noData: wait                   # too little traffic: wait until the deadline, fail, or pass
    latency:                         # same fields as above; latency instead of errors
      provider: router
      metric: latency
      judge: sequential
      alpha: 0.05
      margin: 0.2                    # allow the candidate to be up to 20% slower

  progressDeadline: 10m              # a delivery that makes no progress this long is aborted
"""
