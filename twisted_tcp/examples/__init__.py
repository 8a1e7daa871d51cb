"""
Example handlers, runnable with
C{twistd -n tcpserver --port 9000 --handler twisted_tcp.examples.echo:handle}.
"""
