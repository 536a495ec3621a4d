"""The console: the admin pages (`admin`, one module per page area), the
middleware that counts a page's Redis commands, and the context processors of
the quota banner and page-cost footer.

An interface: it may import every service package, and no service imports it.
"""
