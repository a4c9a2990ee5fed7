"""Tests for L{dhcp6ha._typedtwisted}."""

from twisted.application.service import MultiService, Service
from twisted.trial.unittest import SynchronousTestCase

from dhcp6ha import _typedtwisted


class TypedViewTests(SynchronousTestCase):
    """
    The typed views are Twisted's own functions, so calling one changes
    nothing but what mypy knows.
    """

    def test_sameFunctions(self) -> None:
        """Each view is the Twisted function it names."""
        self.assertIs(_typedtwisted.serviceStart, Service.startService)
        self.assertIs(_typedtwisted.serviceStop, Service.stopService)
        self.assertIs(_typedtwisted.setName, Service.setName)
        self.assertIs(_typedtwisted.setServiceParent, Service.setServiceParent)
        self.assertIs(_typedtwisted.multiServiceInit, MultiService.__init__)
        self.assertIs(_typedtwisted.multiServiceStart, MultiService.startService)
        self.assertIs(_typedtwisted.multiServiceStop, MultiService.stopService)

    def test_startStop(self) -> None:
        """C{serviceStart} and C{serviceStop} mark a service running and stopped."""
        service = Service()
        _typedtwisted.serviceStart(service)
        self.assertTrue(service.running)
        _typedtwisted.serviceStop(service)
        self.assertFalse(service.running)

    def test_parentAndName(self) -> None:
        """C{setName} and C{setServiceParent} make a named child of a L{MultiService}."""
        parent = MultiService()
        child = Service()
        _typedtwisted.setName(child, "child")
        _typedtwisted.setServiceParent(child, parent)
        self.assertIs(parent.getServiceNamed("child"), child)
