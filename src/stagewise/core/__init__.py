"""Pure models and the delivery state machine.

Nothing here reads a clock, touches a file, a socket or a process: time and
observations come in as arguments. The simulator runs this very code on a
virtual clock, and the controller runs it on the real one.
"""
