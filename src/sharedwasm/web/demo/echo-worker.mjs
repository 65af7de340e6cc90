// Sends back whatever it receives: a postMessage round trip, the copying way
// of handing data to a worker (structured clone both ways).
self.onmessage = (event) => self.postMessage(event.data);
