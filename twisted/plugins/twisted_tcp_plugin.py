"""
The twistd plugin of twisted_tcp: C{twistd tcpserver --port 9000 --handler mod:fn}.

Twisted imports every plugin file whenever it looks for plugins, so this one
stays tiny: L{ServiceMaker} imports L{twisted_tcp._twistd} (the options and
the service) only when twistd runs C{tcpserver}, and nothing imports the
reactor.  There is no C{__init__.py} here nor in C{twisted/}: this directory
joins the real C{twisted.plugins} package instead of shadowing it.
"""

from twisted.application.service import ServiceMaker

tcpserver = ServiceMaker(
    "twisted_tcp tcpserver",
    "twisted_tcp._twistd",
    "Serve a twisted_tcp handler(address, reader, writer) on a TCP port or a Unix socket",
    "tcpserver",
)
