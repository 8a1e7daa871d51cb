"""Example handlers, runnable with C{twistd -n tcpserver --handler twisted_tcp.examples.echo:handle}."""
