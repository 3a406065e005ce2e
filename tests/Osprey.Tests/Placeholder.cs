namespace Osprey.Tests;
